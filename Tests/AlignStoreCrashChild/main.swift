// A child process for the store durability tests: appends numbered feedback records in batches
// and prints one line per committed batch, so the test can SIGKILL it at any moment and then
// check that every acknowledged record is stored exactly once.
//
//   alignstore-crash-child sqlite DATA_DIR FIRST TOTAL BATCH
//   alignstore-crash-child postgres URL FIRST TOTAL BATCH
//
// Appends records FIRST..<TOTAL (key "crash-N"), BATCH per append; each batch also resends the
// record before it, as a client resending after a lost acknowledgement would. After each
// append returns it prints "ack N" (N = one past the highest record of the batch) and flushes.
// Exit codes: 0 done, 2 usage, 3 store error.
import AlignStore
import Foundation

func record(_ n: Int) -> FeedbackItem {
  FeedbackItem(
    idempotencyKey: "crash-\(n)", policyVersion: "p1", createdAtUnixMs: 1_700_000_000_000,
    payload: .preference(
      FeedbackPreference(
        prompt: "prompt \(n)", chosen: "chosen \(n)",
        rejected: "rejected \(n) " + String(repeating: "x", count: 200))))
}

/// Writes one line to stdout at once (unbuffered), so the parent sees every acknowledgement.
func emit(_ line: String) {
  FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

let arguments = CommandLine.arguments
guard arguments.count == 6, let first = Int(arguments[3]), let total = Int(arguments[4]),
  let batch = Int(arguments[5]), batch > 0
else {
  FileHandle.standardError.write(
    Data("usage: alignstore-crash-child sqlite|postgres LOCATION FIRST TOTAL BATCH\n".utf8))
  exit(2)
}

do {
  let store: any FeedbackStore
  switch arguments[1] {
  case "sqlite": store = try SQLiteFeedbackStore(dataDirectory: URL(fileURLWithPath: arguments[2]))
  case "postgres": store = try await PostgresFeedbackStore(url: arguments[2])
  default:
    FileHandle.standardError.write(Data("unknown backend \(arguments[1])\n".utf8))
    exit(2)
  }
  emit("ready")
  var next = first
  while next < total {
    let end = min(total, next + batch)
    var items = (next..<end).map(record)
    if next > 0 { items.append(record(next - 1)) }
    let outcomes = try await store.append(items)
    if let bad = outcomes.first(where: { $0.id == nil }) {
      FileHandle.standardError.write(Data("unexpected outcome \(bad)\n".utf8))
      exit(3)
    }
    emit("ack \(end)")
    next = end
    // Paced by the parent: wait for its "next" (or for stdin to close, which ends the pacing), so
    // a slow parent can always kill before the child runs out of work.
    _ = readLine()
  }
  exit(0)
} catch {
  FileHandle.standardError.write(Data("store error: \(error)\n".utf8))
  exit(3)
}
