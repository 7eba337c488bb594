import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import ServiceLifecycle

/// The gateway port's connections: HTTP/1.1 and HTTP/2 on one port, in plaintext (h2c with prior
/// knowledge) or over TLS (chosen by ALPN).
///
/// Plaintext, an HTTP/2 client opens with the fixed connection preface (RFC 9113 §3.4), with which
/// no HTTP/1.1 request line can begin. Hummingbird offers h2c or HTTP/1.1 per port, not both, so
/// this channel reads just enough of the first bytes to decide, then sets up Hummingbird's own
/// HTTP/1.1 or HTTP/2 pipeline and hands those bytes to it. The `Upgrade: h2c` dance of RFC 7540
/// (removed from RFC 9113) is not offered: such a request is answered in HTTP/1.1. With TLS the
/// ALPN result decides instead (Hummingbird's `http2Upgrade` does the same, without the limits
/// below).
///
/// Either way a connection that has not chosen its protocol within the idle timeout (silent, half
/// a preface, no TLS handshake) is closed, HTTP/2 connections whose peer stops answering get the
/// gRPC listener's `UnresponsivePeerHandler`, and requests that arrive over HTTP/2 run with
/// `HTTPGateway.requestIsHTTP2` set, so routes can tell the two protocols apart.
struct GatewayHTTPChannel: ServerChildChannel {
  enum Connection: Sendable {
    case http1(HTTP1Channel.Value)
    case http2(HTTP2Channel.Value)
  }

  struct Value: ServerChildChannelValue {
    let connection: EventLoopFuture<Connection>
    let channel: any Channel
  }

  private let http1: HTTP1Channel
  private let http2: HTTP2Channel
  /// Also how long a new connection may take to choose its protocol.
  private let idleTimeout: TimeAmount
  /// An HTTP/2 connection silent this long with no stream open is closed (UnresponsivePeerHandler):
  /// Hummingbird's idle timeout sends GOAWAY and a PING and then waits for the PING's answer.
  private let unresponsiveLimit: TimeAmount
  /// TLS, with ALPN offering h2 and http/1.1; nil for plaintext.
  private let tls: NIOSSLContext?

  /// `responder` is Hummingbird's.
  init(responder: @escaping HTTPChannelHandler.Responder, idleTimeout: TimeAmount, tls: TLSConfiguration?) throws {
    self.idleTimeout = idleTimeout
    http1 = HTTP1Channel(responder: responder, configuration: .init(idleTimeout: idleTimeout))
    let streamResponder: HTTPChannelHandler.Responder = { request, writer, channel in
      // The writer is non-copyable: it reaches the responder inside the task-local scope
      // through a box, since a closure cannot consume what it captures.
      let box = WriterBox(writer)
      try await HTTPGateway.$requestIsHTTP2.withValue(true) {
        try await responder(request, box.take(), channel)
      }
    }
    let idle = Duration.nanoseconds(idleTimeout.nanoseconds)
    http2 = HTTP2Channel(
      responder: streamResponder,
      configuration: .init(
        idleTimeout: idle,
        streamConfiguration: .init(additionalChannelHandlers: [StreamTracker()], idleTimeout: idleTimeout)))
    unresponsiveLimit = UnresponsivePeerHandler.limit(
      idleTimeoutSeconds: Double(idleTimeout.nanoseconds) / 1_000_000_000)
    if var tls {
      tls.applicationProtocols = ["h2", "http/1.1"]
      self.tls = try NIOSSLContext(configuration: tls)
    } else {
      self.tls = nil
    }
  }

  /// A server builder for `Application(server:)`; `tls` nil serves plaintext.
  static func builder(idleTimeout: TimeAmount, tls: TLSConfiguration?) -> HTTPServerBuilder {
    HTTPServerBuilder { responder in try GatewayHTTPChannel(responder: responder, idleTimeout: idleTimeout, tls: tls) }
  }

  func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
    let (http1, http2, idleTimeout, limit, tls) = (
      self.http1, self.http2, self.idleTimeout, self.unresponsiveLimit, self.tls
    )
    return channel.eventLoop.makeCompletedFuture {
      if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
      let sniffer = ProtocolSniffer<Connection>(timeout: idleTimeout, alpn: tls != nil) { isHTTP2, channel in
        guard isHTTP2 else { return http1.setup(channel: channel, logger: logger).map { .http1($0) } }
        return http2.setup(channel: channel, logger: logger).flatMapThrowing { connection in
          try UnresponsivePeerHandler.install(on: channel, limit: limit)
          return .http2(connection)
        }
      }
      try channel.pipeline.syncOperations.addHandler(sniffer)
      guard let connection = sniffer.connection else { throw ChannelError.inappropriateOperationForState }
      return Value(connection: connection, channel: channel)
    }
  }

  func handle(value: Value, logger: Logger) async {
    do {
      // A connection that has not chosen its protocol carries no request: on graceful shutdown
      // (or cancellation) it is closed at once. Left alone it would hold the listener's shutdown
      // for the whole idle timeout, past the drain timeout, and its cancellation past the service
      // group's limit, which ends the process with a fatal error.
      let channel = value.channel
      let connection = try await withGracefulShutdownHandler {
        try await withTaskCancellationHandler {
          try await value.connection.get()
        } onCancel: {
          channel.close(promise: nil)
        }
      } onGracefulShutdown: {
        channel.close(promise: nil)
      }
      switch connection {
      case .http1(let connection): await http1.handle(value: connection, logger: logger)
      case .http2(let connection): await http2.handle(value: connection, logger: logger)
      }
    } catch {
      // The peer left (or sent nothing) before its protocol could be told.
      logger.debug("HTTP connection closed before its protocol was known: \(error)")
    }
  }
}

/// Carries a response writer (non-copyable) into a closure that hands it on exactly once.
private final class WriterBox: @unchecked Sendable {
  // Safety: made and emptied within one request's task, before and inside `withValue`, never
  // shared with another task.
  private var writer: ResponseWriter?

  init(_ writer: consuming ResponseWriter) {
    self.writer = Optional(writer)
  }

  func take() -> ResponseWriter {
    guard let writer = writer.take() else { preconditionFailure("the response writer was already handed on") }
    return writer
  }
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
private let http2Preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

/// Decides a new connection's protocol, then gets out of the way. Plaintext (first in the
/// pipeline) it buffers the first bytes until they either are the HTTP/2 connection preface or
/// cannot be; with `alpn` (after the TLS handler) it waits for the handshake's ALPN result. Then it
/// asks `configure` to build the rest of the pipeline for that protocol, passes the buffered bytes
/// on and removes itself. A connection that has not decided within `timeout` is closed (the
/// protocols' own idle timers start only once it is known).
final class ProtocolSniffer<Negotiated: Sendable>: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer


  private let configure: (_ isHTTP2: Bool, _ channel: any Channel) -> EventLoopFuture<Negotiated>
  private let timeout: TimeAmount
  private let alpn: Bool
  private var silenceTimer: Scheduled<Void>?
  /// Set once the protocol is known (the pipeline is then being built for it).
  private var decided = false
  private var buffered: ByteBuffer?
  private var promise: EventLoopPromise<Negotiated>?

  init(
    timeout: TimeAmount, alpn: Bool,
    configure: @escaping (_ isHTTP2: Bool, _ channel: any Channel) -> EventLoopFuture<Negotiated>
  ) {
    self.timeout = timeout
    self.alpn = alpn
    self.configure = configure
  }

  /// The configured connection (set once the handler is in a pipeline); fails if the peer
  /// leaves before its protocol is known.
  private(set) var connection: EventLoopFuture<Negotiated>?

  func handlerAdded(context: ChannelHandlerContext) {
    let promise = context.eventLoop.makePromise(of: Negotiated.self)
    self.promise = promise
    connection = promise.futureResult
    let channel = context.channel
    silenceTimer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    silenceTimer?.cancel()
    settle(.failure(ChannelError.inappropriateOperationForState))
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var bytes = unwrapInboundIn(data)
    buffered.setOrWriteBuffer(&bytes)
    guard !alpn, !decided, let buffered, let decision = Self.decide(buffered) else { return }
    begin(context: context, isHTTP2: decision)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    guard alpn, !decided, case TLSUserEvent.handshakeCompleted(let negotiated) = event else {
      context.fireUserInboundEventTriggered(event)
      return
    }
    begin(context: context, isHTTP2: negotiated == "h2")
  }

  private func begin(context: ChannelHandlerContext, isHTTP2: Bool) {
    decided = true
    silenceTimer?.cancel()
    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    configure(isHTTP2, context.channel).hop(to: context.eventLoop).whenComplete { result in
      let (sniffer, context) = loopBound.value
      sniffer.configured(context: context, result: result)
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    // Held back with the bytes: `configured` sends one after them once the pipeline is built.
  }

  func channelInactive(context: ChannelHandlerContext) {
    silenceTimer?.cancel()
    settle(.failure(ChannelError.eof))
    context.fireChannelInactive()
  }

  /// `true` for the HTTP/2 preface, `false` as soon as the bytes differ from it, `nil` while they
  /// are a proper prefix of it.
  static func decide(_ bytes: ByteBuffer) -> Bool? {
    let count = min(bytes.readableBytes, http2Preface.count)
    guard let head = bytes.getBytes(at: bytes.readerIndex, length: count) else { return nil }
    if head[...] != http2Preface[..<count] { return false }
    return count == http2Preface.count ? true : nil
  }

  private func configured(context: ChannelHandlerContext, result: Result<Negotiated, any Error>) {
    settle(result)
    switch result {
    case .success:
      if let bytes = buffered.take() {
        context.fireChannelRead(wrapInboundOut(bytes))
      }
      context.fireChannelReadComplete()
      context.pipeline.syncOperations.removeHandler(self, promise: nil)
    case .failure:
      context.close(promise: nil)
    }
  }

  /// Completes the connection's future once; later outcomes are dropped.
  private func settle(_ result: Result<Negotiated, any Error>) {
    promise?.completeWith(result)
    promise = nil
  }
}
