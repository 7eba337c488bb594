import AlignAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// A throwaway PKI made with the openssl command line for one test: a CA, a server certificate
/// for 127.0.0.1 and localhost, a client certificate from the same CA, and a client certificate
/// from a stranger CA.
struct TestPKI {
  let folder: URL

  func path(_ name: String) -> String { folder.appendingPathComponent(name).path }
  var ca: String { path("ca.pem") }
  var serverCertificate: String { path("server.pem") }
  var serverKey: String { path("server.key") }
  var clientCertificate: String { path("client.pem") }
  var clientKey: String { path("client.key") }
  var strangerCertificate: String { path("stranger-client.pem") }
  var strangerKey: String { path("stranger-client.key") }

  init() throws {
    folder = try TestPaths.temporaryFolder()
    try Self.makeCA("ca", in: folder)
    try Self.makeCA("stranger-ca", in: folder)
    try Self.issue(
      "server", by: "ca", subject: "/CN=localhost",
      extensions: "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", in: folder)
    try Self.issue("client", by: "ca", subject: "/CN=admin-client", extensions: "extendedKeyUsage=clientAuth\n", in: folder)
    try Self.issue(
      "stranger-client", by: "stranger-ca", subject: "/CN=stranger", extensions: "extendedKeyUsage=clientAuth\n",
      in: folder)
  }

  static func makeCA(_ name: String, in folder: URL) throws {
    try openssl(
      [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "\(name).key", "-out", "\(name).pem", "-days", "2", "-subj", "/CN=alignd test \(name)",
      ], in: folder)
  }

  static func issue(_ name: String, by ca: String, subject: String, extensions: String, in folder: URL) throws {
    try openssl(
      [
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "\(name).key", "-out", "\(name).csr", "-subj", subject,
      ], in: folder)
    try Data(extensions.utf8).write(to: folder.appendingPathComponent("\(name).ext"))
    try openssl(
      [
        "x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key", "-CAcreateserial",
        "-out", "\(name).pem", "-days", "2", "-extfile", "\(name).ext",
      ], in: folder)
  }

  static func openssl(_ arguments: [String], in folder: URL) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    process.arguments = arguments
    process.currentDirectoryURL = folder
    let pipe = Pipe()
    process.standardError = pipe
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let errors = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw ServerStartError(
        description: "openssl \(arguments.joined(separator: " ")) failed: \(String(decoding: errors, as: UTF8.self))")
    }
  }

  /// TLS for a client trusting this CA, optionally presenting a client certificate.
  func client(certificate: String? = nil, key: String? = nil) -> HTTP2ClientTransport.Posix.TransportSecurity {
    .tls { config in
      config.trustRoots = .certificates([.file(path: ca, format: .pem)])
      if let certificate, let key {
        config.certificateChain = [.file(path: certificate, format: .pem)]
        config.privateKey = .file(path: key, format: .pem)
      }
    }
  }
}

/// Runs `body` with a client of 127.0.0.1:`port` using `security`.
func withClient<Result: Sendable>(
  port: Int, security: HTTP2ClientTransport.Posix.TransportSecurity,
  _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
) async throws -> Result {
  try await withGRPCClient(
    transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security)
  ) { client in
    try await body(client)
  }
}

/// The status code `body` fails with, or nil when it succeeds.
func statusCode(_ body: () async throws -> Void) async -> RPCError.Code? {
  do {
    try await body()
    return nil
  } catch let error as RPCError {
    return error.code
  } catch {
    return .unknown
  }
}

@Suite("TLS on the gRPC and admin listeners", .serialized)
struct TLSEndToEndTests {
  /// Calls that must fail do so within this (a handshake that never completes would hang). A
  /// refused handshake answers in milliseconds; the margin is for a loaded CI machine, where a
  /// 10 s deadline once expired before the refusal arrived.
  static let shortTimeoutSeconds = 30
  static let shortTimeout: CallOptions = {
    var options = CallOptions.defaults
    options.timeout = .seconds(shortTimeoutSeconds)
    return options
  }()

  /// Waits until the health service answers SERVING over `security`.
  static func waitUntilServing(
    _ server: ServerProcess, port: Int, security: HTTP2ClientTransport.Posix.TransportSecurity
  ) async throws {
    let deadline = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < deadline {
      let status = try? await withClient(port: port, security: security) { client in
        try await Grpc_Health_V1_Health.Client(wrapping: client).check(.with { $0.service = "" }).status
      }
      if status == .serving { return }
      guard server.process.isRunning else { throw ServerStartError(description: "alignd exited:\n\(server.log)") }
      try await Task.sleep(for: .milliseconds(100))
    }
    throw ServerStartError(description: "alignd did not become SERVING over TLS:\n\(server.log)")
  }

  /// The admin listener's port, from its log line.
  static func adminPort(of server: ServerProcess) async throws -> Int {
    let deadline = ContinuousClock.now + .seconds(30)
    while ContinuousClock.now < deadline {
      for line in server.log.split(separator: "\n") where line.contains("alignd admin listening") {
        if let range = line.range(of: "address=") {
          let address = line[range.upperBound...].prefix { $0 != " " }
          if let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) {
            return port
          }
        }
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw ServerStartError(description: "no admin listener in the log:\n\(server.log)")
  }

  @Test func grpcOverTLSWithATestCA() async throws {
    let pki = try TestPKI()
    let server = try await ServerProcess(arguments: [
      "--tls-cert-file", pki.serverCertificate, "--tls-key-file", pki.serverKey,
    ])
    try await Self.waitUntilServing(server, port: server.port, security: pki.client())

    // A real RPC over TLS: the policy's tokenizer answers.
    let tokens = try await withClient(port: server.port, security: pki.client()) { client in
      try await Alignd_V1_Inference.Client(wrapping: client).tokenize(.with { $0.text = "Hello over TLS" })
    }
    #expect(!tokens.tokenIds.isEmpty)
    #expect(tokens.tokens.joined().contains("TLS"))

    // Plaintext to the TLS port fails promptly and cleanly (no hang, no crash).
    let start = ContinuousClock.now
    let plaintext = await statusCode {
      try await withClient(port: server.port, security: .plaintext) { client in
        _ = try await Grpc_Health_V1_Health.Client(wrapping: client).check(
          .with { $0.service = "" }, options: Self.shortTimeout)
      }
    }
    #expect(plaintext == .unavailable || plaintext == .deadlineExceeded)
    #expect(ContinuousClock.now - start < .seconds(Self.shortTimeoutSeconds + 15))

    // A client that does not trust the server's CA is refused too.
    let untrusted = await statusCode {
      try await withClient(port: server.port, security: .tls) { client in
        _ = try await Grpc_Health_V1_Health.Client(wrapping: client).check(
          .with { $0.service = "" }, options: Self.shortTimeout)
      }
    }
    #expect(untrusted == .unavailable)

    // alignctl speaks TLS with --ca-file, and the server is still healthy after the bad clients.
    let alignctl = try runTool(
      TestPaths.alignctl, ["health", "--server", "127.0.0.1:\(server.port)", "--ca-file", pki.ca, "--json"])
    #expect(alignctl.status == 0, "alignctl health over TLS: \(alignctl.output)")
    #expect(alignctl.output.contains("serving"))
    let tokenize = try runTool(
      TestPaths.alignctl,
      ["tokenize", "--server", "127.0.0.1:\(server.port)", "--ca-file", pki.ca, "--text", "Hello over TLS", "--json"])
    #expect(tokenize.status == 0, "alignctl tokenize over TLS: \(tokenize.output)")
    #expect(tokenize.output.contains("\(tokens.tokenIds[0])"))
    #expect(server.process.isRunning)

    // The HTTP gateway serves the same certificate: HTTP/2 and HTTP/1.1 by ALPN, nothing in plaintext.
    let base = "https://127.0.0.1:\(server.httpPort)"
    for version in ["--http2", "--http1.1"] {
      let ready = try runTool(
        URL(fileURLWithPath: "/usr/bin/curl"),
        ["-sS", version, "--cacert", pki.ca, "-w", "\n%{http_code} %{http_version}", "\(base)/v1/models"])
      #expect(ready.status == 0, "curl \(version) over TLS: \(ready.output)")
      #expect(ready.output.hasSuffix(version == "--http2" ? "200 2" : "200 1.1"), "\(ready.output)")
      #expect(ready.output.contains("SmolLM2"), "\(ready.output)")
    }
    let untrustedHTTP = try runTool(URL(fileURLWithPath: "/usr/bin/curl"), ["-sS", "--max-time", "10", "\(base)/healthz"])
    #expect(untrustedHTTP.status == 60, "a client without the CA must fail verification: \(untrustedHTTP.output)")
    let plaintextHTTP = try runTool(
      URL(fileURLWithPath: "/usr/bin/curl"),
      ["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(server.httpPort)/healthz"])
    #expect(plaintextHTTP.status != 0 || !plaintextHTTP.output.hasPrefix("200"), "plaintext HTTP to the TLS port: \(plaintextHTTP.output)")
    #expect(server.process.isRunning)
  }

  /// The gateway's TLS port closes peers that never finish the TLS handshake, and HTTP/2 peers that
  /// go silent after SETTINGS (never answering the idle timeout's PING), as the plaintext ports do.
  @Test(.enabled(if: HTTPGatewayTests.pythonPresent)) func tlsGatewayClosesSilentPeers() async throws {
    let pki = try TestPKI()
    let server = try await ServerProcess(arguments: [
      "--tls-cert-file", pki.serverCertificate, "--tls-key-file", pki.serverKey, "--idle-timeout-seconds", "2",
    ])
    try await Self.waitUntilServing(server, port: server.port, security: pki.client())
    let script = TestPaths.repositoryRoot.appendingPathComponent("Tests/Clients/silent_peers.py").path
    let run = try runTool(URL(fileURLWithPath: HTTPGatewayTests.python), [script, "127.0.0.1", "\(server.httpPort)"])
    let json = try #require(
      try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any], "\(run.output)")
    #expect(json["alpn"] as? String == "h2", "\(json)")
    // Idle 2 s: closed at the idle timeout (no handshake), or after it plus the PING grace (2 s).
    let noHandshake = try #require(json["silent TCP, no TLS handshake"] as? Double, "still open: \(json)")
    #expect(noHandshake >= 1.5 && noHandshake <= 5, "\(json)")
    let silentHTTP2 = try #require(json["TLS h2, preface + SETTINGS, then silent"] as? Double, "still open: \(json)")
    #expect(silentHTTP2 >= 1.5 && silentHTTP2 <= 7, "\(json)")
    #expect(server.process.isRunning)
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }

  @Test func adminListenerRequiresAClientCertificateFromTheCA() async throws {
    let pki = try TestPKI()
    let server = try await ServerProcess(arguments: [
      "--tls-cert-file", pki.serverCertificate, "--tls-key-file", pki.serverKey,
      "--tls-client-ca-file", pki.ca, "--admin-port", "0",
    ])
    let adminPort = try await Self.adminPort(of: server)
    #expect(adminPort != server.port)
    // Inference clients are never asked for a certificate.
    try await Self.waitUntilServing(server, port: server.port, security: pki.client())

    let withCertificate = pki.client(certificate: pki.clientCertificate, key: pki.clientKey)
    let status = try await withClient(port: adminPort, security: withCertificate) { client in
      try await Alignd_V1_Admin.Client(wrapping: client).getStatus(.init())
    }
    #expect(status.serverVersion == "0.1.0")

    for (name, security) in [
      ("no client certificate", pki.client()),
      ("a certificate from another CA", pki.client(certificate: pki.strangerCertificate, key: pki.strangerKey)),
    ] {
      let code = await statusCode {
        try await withClient(port: adminPort, security: security) { client in
          _ = try await Alignd_V1_Admin.Client(wrapping: client).getStatus(.init(), options: Self.shortTimeout)
        }
      }
      #expect(code == .unavailable, "admin listener with \(name): \(String(describing: code))")
    }

    // Admin is not served on the main port at all when it has its own listener.
    let onMain = await statusCode {
      try await withClient(port: server.port, security: withCertificate) { client in
        _ = try await Alignd_V1_Admin.Client(wrapping: client).getStatus(.init())
      }
    }
    #expect(onMain == .unimplemented)

    let alignctl = try runTool(
      TestPaths.alignctl,
      [
        "status", "--server", "127.0.0.1:\(adminPort)", "--ca-file", pki.ca,
        "--cert-file", pki.clientCertificate, "--key-file", pki.clientKey, "--json",
      ])
    #expect(alignctl.status == 0, "alignctl status with a client certificate: \(alignctl.output)")
  }

  @Test func inconsistentTLSSettingsAreClearStartupErrors() throws {
    let pki = try TestPKI()
    let notPEM = pki.path("not-a-certificate.pem")
    try Data("hello".utf8).write(to: URL(fileURLWithPath: notPEM))
    let cases: [(arguments: [String], message: String)] = [
      (["--tls-cert-file", pki.serverCertificate], "give both or neither"),
      (["--tls-cert-file", notPEM, "--tls-key-file", pki.serverKey], "no PEM certificate"),
      (["--tls-cert-file", pki.serverCertificate, "--tls-key-file", pki.clientKey], "does not match"),
      (["--tls-cert-file", pki.serverCertificate, "--tls-key-file", pki.path("missing.key")], "cannot read"),
      (
        ["--tls-cert-file", pki.serverCertificate, "--tls-key-file", pki.serverKey, "--tls-client-ca-file", pki.ca],
        "give admin_port"
      ),
      (["--tls-client-ca-file", pki.ca, "--admin-port", "0"], "needs TLS"),
    ]
    for (arguments, message) in cases {
      let result = try runAlignd(
        ["serve", "--port", "0", "--http-port", "0", "--models-dir", TestPaths.modelsDir.path] + arguments)
      #expect(result.status == 78, "\(arguments): exit \(result.status)\n\(result.stderr)")
      #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
    }
  }
}
