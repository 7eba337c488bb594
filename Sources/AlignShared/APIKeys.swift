import Crypto
import Foundation

/// A role an API key grants. `admin` includes everything `infer` may do.
public enum Role: String, Sendable, CaseIterable, Comparable {
  case infer
  case admin

  public static func < (lhs: Role, rhs: Role) -> Bool {
    lhs == .infer && rhs == .admin
  }
}

/// The keys file format the server reads and `alignctl keys add` writes: one key per line,
/// `<role> <sha256 hex of the key> [name]` (only the hash is stored, never the key).
public enum APIKeyFile {
  /// The SHA-256 of a key, as stored in the keys file.
  public static func hash(key: String) -> [UInt8] {
    Array(SHA256.hash(data: Data(key.utf8)))
  }

  /// A line for the keys file granting `role` to `key`.
  public static func line(for key: String, role: Role, name: String) -> String {
    "\(role.rawValue) \(hash(key: key).map { String(format: "%02x", $0) }.joined()) \(name)"
  }
}
