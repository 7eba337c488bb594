import Foundation
import Synchronization

/// A tiny fork-join pool for the forward pass: `threads - 1` workers that spin briefly between jobs
/// (a forward step posts hundreds of small jobs, and waking a sleeping thread costs more than a
/// small matrix product) and then sleep, so an idle engine does not burn a core.
final class ForkJoinPool: @unchecked Sendable {
  // Safety: `job` is written only by the posting thread before it bumps `generation` (release) and
  // read by workers after they observe the new generation (acquire); `run` is not reentrant and is
  // called from one thread at a time (the engine holds its lock).
  let threads: Int
  private let state: State

  final class State: @unchecked Sendable {
    let generation = Atomic<Int>(0)
    let remaining = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    let condition = NSCondition()
    var job: ((Int) -> Void)?
  }

  init(threads: Int) {
    self.threads = max(1, threads)
    state = State()
    for part in 1..<self.threads {
      let s = state
      let t = Thread { ForkJoinPool.workerLoop(s, part: part) }
      t.name = "alignd-engine-\(part)"
      t.start()
    }
  }

  deinit {
    state.stop.store(true, ordering: .sequentiallyConsistent)
    state.condition.lock()
    state.generation.add(1, ordering: .sequentiallyConsistent)
    state.condition.broadcast()
    state.condition.unlock()
  }

  private static func workerLoop(_ s: State, part: Int) {
    var seen = 0
    while true {
      var spins = 0
      var gen = s.generation.load(ordering: .acquiring)
      while gen == seen {
        spins += 1
        if spins < 50_000 {
          if spins > 2_000 { sched_yield() }
        } else {
          s.condition.lock()
          gen = s.generation.load(ordering: .acquiring)
          while gen == seen {
            s.condition.wait()
            gen = s.generation.load(ordering: .acquiring)
          }
          s.condition.unlock()
          break
        }
        gen = s.generation.load(ordering: .acquiring)
      }
      seen = gen
      if s.stop.load(ordering: .acquiring) { return }
      s.job?(part)
      s.remaining.subtract(1, ordering: .releasing)
    }
  }

  /// Runs `body(part)` for part in 0..<threads, part 0 on the calling thread, and returns when all are done.
  func run(_ body: (Int) -> Void) {
    if threads == 1 {
      body(0)
      return
    }
    withoutActuallyEscaping(body) { escapable in
      state.job = escapable
      state.remaining.store(threads - 1, ordering: .relaxed)
      state.condition.lock()
      state.generation.add(1, ordering: .releasing)
      state.condition.broadcast()
      state.condition.unlock()
      escapable(0)
      var spins = 0
      while state.remaining.load(ordering: .acquiring) != 0 {
        spins += 1
        // Yield once the worker is late: on a busy machine it may be waiting for our core.
        if spins > 2_000 { sched_yield() }
      }
      state.job = nil
    }
  }
}
