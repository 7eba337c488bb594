import Synchronization

/// Pipeline work that an outside signal can cancel: grpc-swift's RPC cancellation (it does not
/// cancel the handler's task), or an HTTP/1.1 connection closing while its request runs.
///
/// ``run(_:)`` runs the operation in a task of its own; ``cancel()`` (before or during the run)
/// cancels that task, and the serving pipeline turns task cancellation into the end of the
/// request: a generation stops at its next step, queued judging work is dropped.
final class CancellableWork: Sendable {
  private struct State {
    var cancelled = false
    var cancelRunning: [@Sendable () -> Void] = []
  }

  private let state = Mutex(State())

  /// Runs `operation`; cancelling the caller's task cancels it too.
  func run<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let task = Task(operation: operation)
    let cancelled = state.withLock { state -> Bool in
      if !state.cancelled { state.cancelRunning.append { task.cancel() } }
      return state.cancelled
    }
    if cancelled { task.cancel() }
    return try await withTaskCancellationHandler {
      try await task.value
    } onCancel: {
      task.cancel()
    }
  }

  /// Cancels the work running now and any started later.
  func cancel() {
    let running = state.withLock { state -> [@Sendable () -> Void] in
      state.cancelled = true
      defer { state.cancelRunning = [] }
      return state.cancelRunning
    }
    for cancel in running { cancel() }
  }
}
