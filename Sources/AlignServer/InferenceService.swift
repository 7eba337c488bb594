import AlignAPI
import AlignServing
import GRPCCore

/// alignd.v1.Inference: validate → schedule → map.
struct InferenceService: Alignd_V1_Inference.SimpleServiceProtocol {
  let status: ServingStatus
  let models: ModelHost

  static func missing(_ what: String) -> RPCError {
    RPCError(code: .unimplemented, message: "\(what) is not implemented yet in this alignd build")
  }

  func generate(request: Alignd_V1_GenerateRequest, context: ServerContext) async throws -> Alignd_V1_GenerateResponse {
    throw Self.missing("Generate (the inference engine and its batch scheduler)")
  }

  func generateStream(
    request: Alignd_V1_GenerateRequest, response: RPCWriter<Alignd_V1_GenerateStreamResponse>,
    context: ServerContext
  ) async throws {
    throw Self.missing("GenerateStream (the inference engine and its batch scheduler)")
  }

  func score(request: Alignd_V1_ScoreRequest, context: ServerContext) async throws -> Alignd_V1_ScoreResponse {
    throw Self.missing("Score (reward models and the generative judge)")
  }

  func checkSafety(
    request: Alignd_V1_CheckSafetyRequest, context: ServerContext
  ) async throws -> Alignd_V1_CheckSafetyResponse {
    throw Self.missing("CheckSafety (the safety classifiers and policy file)")
  }

  func tokenize(request: Alignd_V1_TokenizeRequest, context: ServerContext) async throws -> Alignd_V1_TokenizeResponse {
    throw Self.missing("Tokenize (the policy tokenizer)")
  }

  func logprobs(request: Alignd_V1_LogprobsRequest, context: ServerContext) async throws -> Alignd_V1_LogprobsResponse {
    throw Self.missing("Logprobs (the inference engine)")
  }
}
