import AlignRollout
import AlignServing
import Logging
import ServiceLifecycle

/// Runs the completion sampler (judging sampled completions off the token path) and, every
/// `canary_check_seconds` while serving, the canary analysis (``RolloutController/analyzeCanary()``),
/// until graceful shutdown.
struct CanaryAnalysisService: Service {
  let models: ModelHost
  let rollout: RolloutController
  let status: ServingStatus
  let logger: Logger

  func run() async throws {
    let interval = rollout.canaryPolicy.checkIntervalSeconds
    await cancelWhenGracefulShutdown {
      await withDiscardingTaskGroup { group in
        group.addTask { await models.sampler.run(models: models) }
        group.addTask {
          while !Task.isCancelled {
            do { try await Task.sleep(for: .milliseconds(Int64(interval * 1000))) } catch { return }
            guard status.phase == .serving else { continue }
            await rollout.analyzeCanary()
          }
        }
      }
    }
  }
}
