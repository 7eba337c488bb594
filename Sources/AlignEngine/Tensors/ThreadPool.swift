import Foundation
import Synchronization

/// A small fork-join pool for the forward pass with dynamic chunk claiming.
///
/// A job is split into chunks that the caller and `threads - 1` workers claim from one atomic
/// counter, so a worker that the OS has not scheduled yet (the machine is shared) never holds up
/// the job: the caller simply runs more chunks itself. Workers spin briefly between jobs (a forward
/// step posts hundreds of small jobs, and waking a sleeping thread costs more than one of them), then
/// sleep, so an idle engine does not burn a core.
final class ForkJoinPool: @unchecked Sendable {
  // Safety: `job` is written by the posting thread before it publishes the job word (release) and
  // read by workers only after they claim a chunk of that job (acquire); the poster does not replace
  // `job` until every claimed chunk has finished. `run` is called from one thread at a time.
  let threads: Int
  private let state: State

  final class State: @unchecked Sendable {
    /// generation (24 bits) | chunk count (20 bits) | next chunk (20 bits)
    let word = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    let condition = NSCondition()
    var job: ((_ participant: Int, _ chunk: Int) -> Void)?
  }

  static let chunkBits = 20
  static let chunkMask = (1 << chunkBits) - 1
  static let maxChunks = chunkMask

  init(threads: Int) {
    self.threads = max(1, threads)
    state = State()
    for participant in 1..<self.threads {
      let s = state
      let t = Thread {
        // Named from the thread itself: on Linux a name set before start() never reaches the kernel.
        Thread.current.name = "alignd-engine-\(participant)"
        ForkJoinPool.workerLoop(s, participant: participant)
      }
      t.start()
    }
  }

  deinit {
    state.stop.store(true, ordering: .sequentiallyConsistent)
    state.condition.lock()
    state.word.add(1 << (2 * Self.chunkBits), ordering: .sequentiallyConsistent)
    state.condition.broadcast()
    state.condition.unlock()
  }

  @inline(__always)
  private static func generation(_ w: Int) -> Int { w >> (2 * chunkBits) }

  /// Claims and runs chunks of the current job until none is left.
  @inline(__always)
  private static func drain(_ s: State, participant: Int) {
    var w = s.word.load(ordering: .acquiring)
    while true {
      let next = w & chunkMask
      let total = (w >> chunkBits) & chunkMask
      if next >= total { return }
      let (exchanged, original) = s.word.compareExchange(
        expected: w, desired: w + 1, successOrdering: .acquiringAndReleasing, failureOrdering: .acquiring)
      if exchanged {
        s.job?(participant, next)
        s.finished.add(1, ordering: .releasing)
        w = w + 1
      } else {
        w = original
      }
    }
  }

  private static func workerLoop(_ s: State, participant: Int) {
    var seen = 0
    while true {
      var spins = 0
      var gen = generation(s.word.load(ordering: .acquiring))
      while gen == seen {
        spins += 1
        if spins > 50_000 {
          s.condition.lock()
          gen = generation(s.word.load(ordering: .acquiring))
          while gen == seen {
            s.condition.wait()
            gen = generation(s.word.load(ordering: .acquiring))
          }
          s.condition.unlock()
          break
        }
        if spins > 2_000 { sched_yield() }
        gen = generation(s.word.load(ordering: .acquiring))
      }
      seen = gen
      if s.stop.load(ordering: .acquiring) { return }
      drain(s, participant: participant)
    }
  }

  /// Runs `body(participant, chunk)` for every chunk in 0..<chunks across the caller (participant 0)
  /// and the workers (participants 1..<threads), and returns when all chunks are done. A participant
  /// index is used by one thread at a time, so it can select per-thread scratch memory.
  /// `chunks` must not exceed `maxChunks` (callers clamp it; `parallelFor` does).
  func run(chunks requested: Int, _ body: (_ participant: Int, _ chunk: Int) -> Void) {
    let chunks = min(requested, Self.maxChunks)
    if threads == 1 || chunks <= 1 {
      for c in 0..<chunks { body(0, c) }
      return
    }
    withoutActuallyEscaping(body) { escapable in
      let s = state
      s.job = escapable
      s.finished.store(0, ordering: .relaxed)
      let gen = Self.generation(s.word.load(ordering: .relaxed)) + 1
      s.condition.lock()
      s.word.store((gen << (2 * Self.chunkBits)) | (chunks << Self.chunkBits), ordering: .releasing)
      s.condition.broadcast()
      s.condition.unlock()
      Self.drain(s, participant: 0)
      var spins = 0
      while s.finished.load(ordering: .acquiring) != chunks {
        spins += 1
        // A worker is finishing a chunk; if it was descheduled, give it our core.
        if spins > 500 { sched_yield() }
      }
      s.job = nil
    }
  }
}
