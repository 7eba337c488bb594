import AlignShared
import ArgumentParser
import Foundation

struct Keys: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Manage the API keys file.", subcommands: [Add.self])

  struct Add: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a random API key, append its SHA-256 hash to the keys file and print the key once.")

    @Option(help: "infer or admin.") var role: String
    @Option(help: "A name for the key (shown in logs and errors).") var name: String
    @Option(help: "The keys file to append to (created if missing).") var file: String

    func run() throws {
      guard let role = Role(rawValue: role) else { throw ValidationError("--role must be infer or admin") }
      guard !name.isEmpty, !name.contains("\n") else { throw ValidationError("--name must be one line") }
      var bytes = [UInt8](repeating: 0, count: 32)
      var generator = SystemRandomNumberGenerator()
      for i in bytes.indices { bytes[i] = UInt8.random(in: .min ... .max, using: &generator) }
      let key = "ak_" + bytes.map { String(format: "%02x", $0) }.joined()
      let line = APIKeyFile.line(for: key, role: role, name: name) + "\n"
      let manager = FileManager.default
      if !manager.fileExists(atPath: file) {
        guard manager.createFile(atPath: file, contents: nil, attributes: [.posixPermissions: 0o600]) else {
          throw ValidationError("cannot create \(file)")
        }
      }
      guard let handle = FileHandle(forWritingAtPath: file) else { throw ValidationError("cannot write \(file)") }
      defer { try? handle.close() }
      try handle.seekToEnd()
      try handle.write(contentsOf: Data(line.utf8))
      print(key)
    }
  }
}
