import AlignAPI
import AlignServing
import AlignStore
import GRPCCore

/// Admin's generation-log RPCs: list (newest first, paged), fetch one, export (oldest first,
/// resumable by id).
extension AdminService {
  func listGenerations(
    request: Alignd_V1_ListGenerationsRequest, context: ServerContext
  ) async throws -> Alignd_V1_ListGenerationsResponse {
    let filter = try GenerationLogMapping.listFilter(request)
    await flushGenerationLog()
    let page = try await generations.generations(filter)
    return GenerationLogMapping.listResponse(page, limit: filter.limit ?? 0)
  }

  func getGeneration(
    request: Alignd_V1_GetGenerationRequest, context: ServerContext
  ) async throws -> Alignd_V1_LoggedCompletion {
    guard !request.completionID.isEmpty else { throw InvalidRequest("completion_id is empty") }
    await flushGenerationLog()
    guard let stored = try await generations.generation(completionID: request.completionID) else {
      throw RPCError(
        code: .notFound,
        message: "no logged completion '\(request.completionID)' (unknown, not sampled, or past the log's retention)")
    }
    return GenerationLogMapping.loggedCompletion(stored)
  }

  func exportGenerations(
    request: Alignd_V1_ExportGenerationsRequest, response: RPCWriter<Alignd_V1_LoggedCompletion>,
    context: ServerContext
  ) async throws {
    try await forEachGeneration(try GenerationLogMapping.exportFilter(request), context: context) {
      try await response.write($0)
    }
  }

  /// Every logged completion the filter selects, oldest first, read a page at a time after the
  /// log's queue is written out; stops early when the call is cancelled.
  func forEachGeneration(
    _ filter: GenerationLogFilter, context: ServerContext,
    _ body: (Alignd_V1_LoggedCompletion) async throws -> Void
  ) async throws {
    var filter = filter
    await flushGenerationLog()
    var remaining = filter.limit
    let pageSize = 256
    while !context.cancellation.isCancelled {
      let want = min(pageSize, remaining ?? pageSize)
      if want == 0 { return }
      filter.limit = want
      let page = try await generations.generations(filter)
      for stored in page { try await body(GenerationLogMapping.loggedCompletion(stored)) }
      guard let last = page.last, page.count == want else { return }
      filter.afterID = last.id
      remaining = remaining.map { $0 - page.count }
    }
  }
}
