import Synchronization

/// The server's lifecycle phase, the single source of truth for health and admission.
///
/// `loading` → `serving` → `draining`, changed only through the named transitions below; watchers
/// (the health service's `Watch`) receive every change.
public final class ServingStatus: Sendable {
  public enum Phase: Sendable, Equatable {
    /// Models are loading; health answers NOT_SERVING, inference RPCs UNAVAILABLE.
    case loading
    /// Ready.
    case serving
    /// SIGTERM received: no new RPCs are admitted, in-flight ones finish.
    case draining
    /// Startup failed (e.g. the default model could not be loaded); the message says why.
    case failed(String)
  }

  private struct State {
    var phase: Phase = .loading
    var nextWatcher = 0
    var watchers: [Int: AsyncStream<Phase>.Continuation] = [:]
  }

  private let state = Mutex(State())
  private let started = ContinuousClock.now

  public init() {}

  /// The current phase.
  public var phase: Phase { state.withLock { $0.phase } }

  /// Time since the server process set up its status.
  public var uptime: Duration { ContinuousClock.now - started }

  /// Loading finished: start serving (ignored once draining or failed).
  public func markServing() {
    transition { phase in phase == .loading ? .serving : nil }
  }

  /// Startup failed.
  public func markFailed(_ reason: String) {
    transition { phase in phase == .draining ? nil : .failed(reason) }
  }

  /// Shutdown began.
  public func beginDraining() {
    transition { _ in .draining }
  }

  /// A stream of phases: the current one first, then every change, until `stop` is called or the
  /// consumer goes away.
  public func updates() -> (stream: AsyncStream<Phase>, stop: @Sendable () -> Void) {
    let (stream, continuation) = AsyncStream.makeStream(of: Phase.self, bufferingPolicy: .bufferingNewest(8))
    let id: Int = state.withLock { state in
      let id = state.nextWatcher
      state.nextWatcher += 1
      state.watchers[id] = continuation
      continuation.yield(state.phase)
      return id
    }
    continuation.onTermination = { [weak self] _ in
      _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
    }
    return (stream, { continuation.finish() })
  }

  private func transition(_ next: (Phase) -> Phase?) {
    state.withLock { state in
      guard let new = next(state.phase), new != state.phase else { return }
      state.phase = new
      for continuation in state.watchers.values { continuation.yield(new) }
    }
  }
}
