/// How the judging work done for one request is queued: its priority orders the dynamic batchers'
/// queues, and what is still queued at its deadline is dropped.
///
/// Set once per request by ``InferencePipeline`` (``run(_:)``) and read by every
/// ``DynamicBatcher`` the request's work reaches, through the reward scorer, the safety backends
/// or teacher forcing, including backends added later: none of them has to pass it along.
public struct RequestScheduling: Sendable, Equatable {
  public var priority: RequestPriority
  /// When the request must end; nil for no deadline.
  public var deadline: ContinuousClock.Instant?

  /// The scheduling of the request the current task works for (normal priority, no deadline
  /// outside a request).
  @TaskLocal public static var current = RequestScheduling()

  public init(priority: RequestPriority = .normal, deadline: ContinuousClock.Instant? = nil) {
    self.priority = priority
    self.deadline = deadline
  }

  init(_ request: GenerationRequest) {
    self.init(priority: request.priority, deadline: request.deadline)
  }

  /// Runs `body` with this as the current scheduling.
  public func run<T>(_ body: () async throws -> T) async rethrows -> T {
    try await Self.$current.withValue(self, operation: body)
  }
}
