import AlignServing
import AlignShared
import Crypto
import Foundation

/// OpenAI's response shapes for what the serving pipeline answers.
public enum OpenAIShapes {
  /// OpenAI's finish reasons: the safety screen's stop is `content_filter`, as OpenAI reports it.
  static func finishReason(_ reason: FinishReason?) -> JSONValue {
    switch reason {
    case .stop: return .string("stop")
    case .length: return .string("length")
    case .safety: return .string("content_filter")
    case .cancelled: return .string("cancelled")
    case .deadline: return .string("deadline")
    case nil: return .null
    }
  }

  /// `tool_calls` of a chat message (or, with `index`, of a stream delta).
  static func toolCalls(_ calls: [ToolCalling.Call], delta: Bool = false) -> JSONValue {
    .array(
      calls.enumerated().map { index, call in
        .object(
          (delta ? [("index", .int(Int64(index)))] : []) + [
            ("id", .string(call.id)), ("type", .string("function")),
            ("function", .object([("name", .string(call.name)), ("arguments", .string(call.arguments))])),
          ])
      })
  }

  static func usage(_ usage: TokenUsage) -> JSONValue {
    .object([
      ("prompt_tokens", .int(Int64(usage.promptTokens))),
      ("completion_tokens", .int(Int64(usage.completionTokens))),
      ("total_tokens", .int(Int64(usage.totalTokens))),
      ("prompt_tokens_details", .object([("cached_tokens", .int(Int64(usage.cachedPromptTokens)))])),
    ])
  }

  /// The exact model versions (alignd extension field `versions`).
  static func versions(_ versions: ModelVersions) -> JSONValue {
    .object([
      ("policy", .string(versions.policy)),
      ("reward", .string(versions.reward)),
      ("safety", .string(versions.safety)),
    ])
  }

  /// `system_fingerprint`: changes whenever any model version that shapes an answer changes.
  static func fingerprint(_ versions: ModelVersions) -> JSONValue {
    let digest = SHA256.hash(data: Data("\(versions.policy)|\(versions.reward)|\(versions.safety)".utf8))
    return .string("fp_" + digest.prefix(6).map { String(format: "%02x", $0) }.joined())
  }

  /// Chat logprobs: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}`.
  static func chatLogprobs(_ tokens: [DecodedLogprob], top: Int) -> JSONValue {
    func entry(_ token: String, _ logprob: Float) -> [(String, JSONValue)] {
      [
        ("token", .string(token)), ("logprob", .number(logprob)),
        ("bytes", .array(Array(token.utf8).map { .int(Int64($0)) })),
      ]
    }
    return .object([
      (
        "content",
        .array(
          tokens.map { token in
            .object(
              entry(token.token, token.logprob) + [
                ("top_logprobs", .array(token.top.prefix(top).map { .object(entry($0.token, $0.logprob)) }))
              ])
          })
      ),
      ("refusal", .null),
    ])
  }

  /// Completions (legacy) logprobs: parallel lists plus `text_offset` from `offset` on. With
  /// `prompt` (echo), the prompt's tokens come first, the very first with null log-probabilities.
  static func completionLogprobs(
    _ tokens: [DecodedLogprob], top: Int, offset: Int, prompt: PromptLogprobs? = nil
  ) -> JSONValue {
    var texts: [JSONValue] = []
    var logprobs: [JSONValue] = []
    var tops: [JSONValue] = []
    var offsets: [JSONValue] = []
    var position = offset
    func append(_ text: String, _ logprob: JSONValue, _ top: JSONValue) {
      texts.append(.string(text))
      logprobs.append(logprob)
      tops.append(top)
      offsets.append(.int(Int64(position)))
      position += text.count
    }
    if let prompt { append(prompt.firstToken, .null, .null) }
    for token in (prompt?.tokens ?? []) + tokens {
      var seen = Set<String>()
      var pairs: [(String, JSONValue)] = []
      for alternative in token.top.prefix(top) where seen.insert(alternative.token).inserted {
        pairs.append((alternative.token, .number(alternative.logprob)))
      }
      append(token.token, .number(token.logprob), .object(pairs))
    }
    return .object([
      ("tokens", .array(texts)), ("token_logprobs", .array(logprobs)), ("top_logprobs", .array(tops)),
      ("text_offset", .array(offsets)),
    ])
  }
}
