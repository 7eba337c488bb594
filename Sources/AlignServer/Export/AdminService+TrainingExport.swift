import AlignAPI
import AlignServing
import AlignStore
import GRPCCore

/// Admin's ExportTrainingData: training rows built on the server from the feedback store and the
/// generation log, streamed oldest first, one message per record that yields rows, resumable by
/// the record's stored id.
extension AdminService {
  /// The feedback types each feedback format can hold, and the stored kinds they are among.
  static func trainingKinds(_ format: Alignd_V1_TrainingFormat) -> (types: Set<String>, kinds: [Alignd_V1_FeedbackKind])? {
    switch format {
    case .preference, .preferenceChat: return (["preference", "correction", "ranking"], [.preference, .ranking])
    case .kto, .ktoChat: return (["rating", "thumbs"], [.rating])
    case .sft, .sftChat: return (["correction"], [.preference])
    case .rollouts, .unspecified, .UNRECOGNIZED: return nil
    }
  }

  func exportTrainingData(
    request: Alignd_V1_ExportTrainingDataRequest, response: RPCWriter<Alignd_V1_TrainingRows>,
    context: ServerContext
  ) async throws {
    switch request.format {
    case .unspecified: throw InvalidRequest("format is unset: preference, preference_chat, kto, kto_chat, sft, sft_chat or rollouts")
    case .UNRECOGNIZED(let value): throw InvalidRequest("format \(value) is not a training format")
    case .rollouts: try await exportRollouts(request, response: response, context: context)
    default: try await exportFeedbackRows(request, response: response, context: context)
    }
  }

  private func exportFeedbackRows(
    _ request: Alignd_V1_ExportTrainingDataRequest, response: RPCWriter<Alignd_V1_TrainingRows>,
    context: ServerContext
  ) async throws {
    guard let held = Self.trainingKinds(request.format) else { return }
    let (types, kinds) = (held.types, held.kinds)
    for type in request.feedbackTypes where !types.contains(type) {
      throw InvalidRequest(
        "feedback_types: \(type) does not fit this format (it holds \(types.sorted().joined(separator: ", ")))")
    }
    guard ["", "app", "admin"].contains(request.source) else {
      throw InvalidRequest("source must be app, admin or empty (both)")
    }
    let wanted = request.feedbackTypes.isEmpty ? types : Set(request.feedbackTypes)
    var selection = request.feedback
    selection.kinds = kinds
    selection.afterID = request.afterCursor
    selection.limit = request.limit
    let filter = try FeedbackMapping.filter(selection)
    let chat = [Alignd_V1_TrainingFormat.preferenceChat, .ktoChat, .sftChat].contains(request.format)
    var conversations: [String: TrainingRows.Messages] = [:]
    if chat { await flushGenerationLog() }
    for try await page in feedback.exportPages(filter, pageSize: 256) {
      for item in page {
        if context.cancellation.isCancelled { return }
        let stored = FeedbackMapping.record(item)
        let record = stored.record
        guard wanted.contains(TrainingRows.feedbackType(record)),
          request.source.isEmpty || TrainingRows.source(record) == request.source
        else { continue }
        var logged: TrainingRows.Messages? = nil
        if chat, let id = TrainingRows.loggedCompletionID(record) {
          if let known = conversations[id] {
            logged = known
          } else if let entry = try await generations.generation(completionID: id)?.entry {
            let messages = entry.messages.map { ["role": $0.role, "content": $0.content] }
            conversations[id] = messages
            logged = messages
          }
        }
        let rows: [TrainingRows.Row]
        switch request.format {
        case .preference, .preferenceChat: rows = TrainingRows.preference(stored, chat: chat, logged: logged)
        case .kto, .ktoChat: rows = TrainingRows.kto(stored, chat: chat, logged: logged)
        default: rows = TrainingRows.sft(stored, chat: chat, logged: logged)
        }
        guard !rows.isEmpty else { continue }
        let lines = try rows.map(TrainingRows.json)
        try await response.write(.with {
          $0.rows = lines
          $0.cursor = stored.id
        })
      }
    }
  }

  private func exportRollouts(
    _ request: Alignd_V1_ExportTrainingDataRequest, response: RPCWriter<Alignd_V1_TrainingRows>,
    context: ServerContext
  ) async throws {
    guard request.feedbackTypes.isEmpty, request.source.isEmpty else {
      throw InvalidRequest("feedback_types and source select feedback; rollouts come from the generation log")
    }
    let filter = try GenerationLogMapping.exportFilter(
      .with {
        $0.filter = request.generations
        $0.afterID = request.afterCursor
        $0.limit = request.limit
      })
    try await forEachGeneration(filter, context: context) { logged in
      let line = try TrainingRows.json(TrainingRows.rollout(logged))
      try await response.write(.with {
        $0.rows = [line]
        $0.cursor = logged.id
      })
    }
  }
}
