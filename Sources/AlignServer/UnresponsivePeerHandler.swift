import NIOCore
import NIOHTTP2

/// Closes HTTP/2 connections whose peer has gone silent with no RPC open.
///
/// The transport's idle timeout (`idle_timeout_seconds`) ends an idle connection politely: a
/// GOAWAY and a PING, then it waits for the PING's acknowledgement before closing, with no time
/// limit (grpc-swift-nio-transport starts its grace timer only once the PING is acknowledged). A
/// peer that never answers — a TCP connection that sent nothing or half a preface, a client that
/// stopped reading, a host that vanished — would keep its connection and file descriptor forever,
/// so a slow-loris client could exhaust them. This handler closes a connection once it has had
/// no open stream and read no connection-level frame for `limit` (the idle timeout plus a grace
/// period); a polite idle peer is closed earlier by the transport itself, and connections with open
/// streams are left alone. Install it with `install(on:limit:)` and `track(stream:)` from the
/// transport's `channelDebuggingCallbacks` (gRPC), or through `GatewayHTTPChannel` and a
/// `StreamTracker` in every stream's pipeline (the HTTP gateway's HTTP/2 connections, whose
/// Hummingbird connection manager waits for the PING just the same).
final class UnresponsivePeerHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame
  typealias InboundOut = HTTP2Frame

  /// The idle timeout plus a grace period for the GOAWAY/PING round trip.
  static func limit(idleTimeoutSeconds: Double) -> TimeAmount {
    .milliseconds(Int64((idleTimeoutSeconds + min(10, max(1, idleTimeoutSeconds))) * 1000))
  }

  /// Adds the handler to a new connection, right after its HTTP/2 handler, where the frames of the
  /// connection itself (SETTINGS, PING, WINDOW_UPDATE, GOAWAY) are read. Call from the transport's
  /// `onAcceptTCPConnection`.
  static func install(on channel: any Channel, limit: TimeAmount) throws {
    let pipeline = channel.pipeline.syncOperations
    let http2 = try pipeline.handler(type: NIOHTTP2Handler.self)
    try pipeline.addHandler(UnresponsivePeerHandler(limit: limit), position: .after(http2))
  }

  /// Counts a stream of its connection while the stream is open. Call from the transport's
  /// `onAcceptHTTP2Stream` (the stream multiplexer delivers stream events to the transport's own
  /// delegate, not down the connection's pipeline).
  static func track(stream: any Channel) {
    guard let parent = stream.parent,
      let handler = try? parent.pipeline.syncOperations.handler(type: UnresponsivePeerHandler.self)
    else { return }
    handler.openStreams += 1
    let bound = NIOLoopBound(handler, eventLoop: stream.eventLoop)
    stream.closeFuture.whenComplete { _ in
      let handler = bound.value
      handler.openStreams = max(0, handler.openStreams - 1)
      handler.lastActivity = .now()
    }
  }

  private let limit: TimeAmount
  private var lastActivity = NIODeadline.now()
  private var openStreams = 0
  private var check: RepeatedTask?

  init(limit: TimeAmount) { self.limit = limit }

  func handlerAdded(context: ChannelHandlerContext) {
    lastActivity = .now()
    if context.channel.isActive { start(context: context) }
  }

  func handlerRemoved(context: ChannelHandlerContext) { stop() }

  func channelActive(context: ChannelHandlerContext) {
    start(context: context)
    context.fireChannelActive()
  }

  func channelInactive(context: ChannelHandlerContext) {
    stop()
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    lastActivity = .now()
    context.fireChannelRead(data)
  }

  private func start(context: ChannelHandlerContext) {
    guard check == nil else { return }
    let period = TimeAmount.milliseconds(max(100, min(1000, limit.nanoseconds / 4_000_000)))
    let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    check = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
      let (handler, context) = bound.value
      handler.closeIfUnresponsive(context: context)
    }
  }

  private func stop() {
    check?.cancel()
    check = nil
  }

  private func closeIfUnresponsive(context: ChannelHandlerContext) {
    guard openStreams == 0, NIODeadline.now() - lastActivity >= limit else { return }
    stop()
    context.close(promise: nil)
  }
}

/// Counts its HTTP/2 stream with the connection's `UnresponsivePeerHandler` while the stream is
/// open (`UnresponsivePeerHandler.track(stream:)`), for servers that add handlers to each stream's
/// pipeline rather than calling back on new streams. Passes everything through.
final class StreamTracker: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = Any
  typealias InboundOut = Any

  func handlerAdded(context: ChannelHandlerContext) {
    UnresponsivePeerHandler.track(stream: context.channel)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    context.fireChannelRead(data)
  }
}
