import GRPCCore
import SwiftProtobuf

/// Refuses request messages larger than the configured limit with RESOURCE_EXHAUSTED and a message
/// naming both sizes.
///
/// The transport's own limit resets the stream without a useful status, so it is set above this
/// one as a memory backstop, and this check gives clients the clear answer.
struct MessageSizeInterceptor: ServerInterceptor {
  let limit: Int

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let limit = self.limit
    var request = request
    let messages = request.messages
    request.messages = RPCAsyncSequence(
      wrapping: messages.map { message in
        if let message = message as? any SwiftProtobuf.Message {
          let size = try message.serializedBytes() as [UInt8]
          if size.count > limit {
            throw RPCError(
              code: .resourceExhausted,
              message: "request message of \(size.count) bytes exceeds the limit of \(limit) bytes (max_request_bytes)")
          }
        }
        return message
      })
    return try await next(request, context)
  }
}
