import Foundation

/// A PostgreSQL connection URL, parsed and checked: `postgres://user:pass@host:port/db?params`
/// (the scheme may also be `postgresql`).
///
/// User, password and database are percent-decoded; the port defaults to 5432 and the database
/// to the user name. Query parameters (anything else is an error, so a typo does not pass
/// silently):
/// - `sslmode`: `disable`, `allow` or `prefer` (the default: TLS if the server offers it),
///   `require` (TLS, certificate not checked, as libpq does), `verify-ca` (certificate checked,
///   host name not), `verify-full` (both checked).
/// - `schema`: the PostgreSQL schema that holds alignd's tables (default `public`); lowercase
///   letters, digits and `_`, starting with a letter or `_`, at most 63 characters.
/// - `application_name`: shown in `pg_stat_activity` (default `alignd`).
/// - `connect_timeout`: seconds to wait for a TCP connection (default 10).
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
  /// How to use TLS (`sslmode`).
  public enum TLSMode: String, Sendable, Hashable, CaseIterable {
    case disable, allow, prefer, require
    case verifyCA = "verify-ca"
    case verifyFull = "verify-full"
  }

  public var host: String
  public var port: Int
  public var user: String
  /// The password, or nil when the URL has none (trust or peer authentication).
  public var password: String?
  public var database: String
  public var tlsMode: TLSMode
  public var schema: String
  public var applicationName: String
  /// Seconds to wait for a TCP connection.
  public var connectTimeoutSeconds: Int

  /// Parses `string`.
  /// - Throws: `FeedbackStoreError.cannotOpen` naming what is wrong (the password is never shown).
  public init(_ string: String) throws {
    func fail(_ why: String) -> FeedbackStoreError {
      .cannotOpen(path: Self.redact(string), detail: "invalid PostgreSQL URL: \(why)")
    }
    guard let components = URLComponents(string: string) else {
      throw fail("not a URL")
    }
    guard let scheme = components.scheme?.lowercased(),
      scheme == "postgres" || scheme == "postgresql"
    else {
      throw fail("the scheme must be postgres:// or postgresql://")
    }
    var host = components.percentEncodedHost.flatMap { $0.removingPercentEncoding } ?? ""
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    guard !host.isEmpty else { throw fail("no host") }
    self.host = host
    let port = components.port ?? 5432
    guard (1...65535).contains(port) else { throw fail("port \(port) is out of range") }
    self.port = port
    guard let user = components.percentEncodedUser?.removingPercentEncoding, !user.isEmpty else {
      throw fail("no user name (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")
    }
    self.user = user
    password = components.percentEncodedPassword?.removingPercentEncoding
    var path = components.percentEncodedPath
    if path.hasPrefix("/") { path.removeFirst() }
    guard !path.contains("/") else { throw fail("the path must be just /DATABASE") }
    guard let database = path.removingPercentEncoding else {
      throw fail("the database name is not valid percent-encoding")
    }
    self.database = database.isEmpty ? user : database

    tlsMode = .prefer
    schema = "public"
    applicationName = "alignd"
    connectTimeoutSeconds = 10
    var seen: Set<String> = []
    for item in components.queryItems ?? [] {
      guard seen.insert(item.name).inserted else {
        throw fail("parameter \(item.name) given twice")
      }
      let value = item.value ?? ""
      switch item.name {
      case "sslmode":
        guard let mode = TLSMode(rawValue: value) else {
          throw fail(
            "sslmode \(value) is not one of "
              + TLSMode.allCases.map(\.rawValue).joined(separator: ", "))
        }
        tlsMode = mode
      case "schema":
        guard Self.isPlainIdentifier(value) else {
          throw fail(
            "schema \"\(value)\" must be 1-63 lowercase letters, digits or _, not starting with a digit"
          )
        }
        schema = value
      case "application_name":
        applicationName = value
      case "connect_timeout":
        guard let seconds = Int(value), seconds > 0 else {
          throw fail("connect_timeout must be a positive number of seconds")
        }
        connectTimeoutSeconds = seconds
      default:
        throw fail(
          "unknown parameter \(item.name) (known: sslmode, schema, application_name, connect_timeout)"
        )
      }
    }
  }

  /// The URL without its password, with the schema after `#`: what errors and logs show.
  public var description: String {
    let hostPart = host.contains(":") ? "[\(host)]" : host
    return "postgres://\(user)@\(hostPart):\(port)/\(database)#\(schema)"
  }

  /// Whether `name` can be used unquoted as a PostgreSQL identifier of ours.
  static func isPlainIdentifier(_ name: String) -> Bool {
    let bytes = Array(name.utf8)
    guard (1...63).contains(bytes.count) else { return false }
    for (i, b) in bytes.enumerated() {
      let lower = b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")
      let digit = b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")
      if !(lower || b == UInt8(ascii: "_") || (digit && i > 0)) { return false }
    }
    return true
  }

  /// `string` with any password replaced, for error messages about unparsable URLs.
  static func redact(_ string: String) -> String {
    guard let schemeEnd = string.range(of: "://"),
      let at = string[schemeEnd.upperBound...].lastIndex(of: "@")
    else { return string }
    let userInfo = string[schemeEnd.upperBound..<at]
    guard let colon = userInfo.firstIndex(of: ":") else { return string }
    return String(string[..<colon]) + ":***" + String(string[at...])
  }
}
