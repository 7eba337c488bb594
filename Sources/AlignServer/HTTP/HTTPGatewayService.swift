import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// Runs the HTTP gateway in the server's ServiceGroup.
///
/// Plaintext, the port serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c), told apart by the
/// connection's first bytes; with TLS, HTTP/2 and HTTP/1.1 chosen by ALPN (GatewayHTTPChannel).
/// On graceful shutdown the server turns `draining` at once (readiness 503, new inference requests
/// 503 on both surfaces), the listener closes, and requests and streams in flight finish within
/// the group's drain timeout.
struct HTTPGatewayService: Service {
  let gateway: HTTPGateway
  let host: String
  let port: Int
  let idleTimeoutSeconds: Double
  /// TLS for the port (nil: plaintext, HTTP/1.1 and h2c).
  let tls: TLSConfiguration?
  let logger: Logger

  func run() async throws {
    let idle = TimeAmount.milliseconds(Int64(idleTimeoutSeconds * 1000))
    let server = GatewayHTTPChannel.builder(idleTimeout: idle, tls: tls)
    let logger = self.logger
    let secure = tls != nil
    let app = Application(
      router: gateway.makeRouter(),
      server: server,
      configuration: .init(address: .hostname(host, port: port), serverName: nil),
      onServerRunning: { channel in
        let address = channel.localAddress.map { "\($0)" } ?? "\(host):\(port)"
        logger.info(
          "alignd listening", metadata: ["address": "\(address)", "protocol": "http", "tls": "\(secure)"])
      },
      logger: logger)
    let status = gateway.status
    try await withGracefulShutdownHandler {
      do {
        try await app.run()
      } catch {
        throw StartupError("the HTTP listener failed: \(error) (is the port already in use?)", exitCode: 69)
      }
    } onGracefulShutdown: {
      logger.info("draining: the HTTP listener admits no new requests; in-flight requests may finish")
      status.beginDraining()
    }
  }
}
