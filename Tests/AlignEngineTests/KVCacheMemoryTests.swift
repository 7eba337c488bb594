import AlignEngine
import Foundation
import Testing

/// A KV cache is sized for the worst case (`--kv-cache-tokens` plus a context), but only the
/// blocks sequences write should cost resident memory, and freeing it must give the memory back
/// (a replaced policy's cache would otherwise stay in the process after a swap).
@Suite("KV cache memory", .serialized)
struct KVCacheMemoryTests {
  /// Resident memory of this process in MB (VmRSS), nil where /proc is absent.
  static func residentMB() -> Double? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
      let fields = line.split(separator: " ", omittingEmptySubsequences: true)
      if fields.count >= 2, let kb = Double(fields[1]) { return kb / 1024 }
    }
    return nil
  }

  static var hasProc: Bool { residentMB() != nil }

  @Test(
    "a 2 GiB cache costs no resident memory until it is written, and none once freed",
    .enabled(if: hasProc, "needs /proc/self/status"))
  func largeCacheIsLazyAndReturned() throws {
    // 32 layers x 2048 wide x 4096 tokens x 4 bytes = 1 GiB each for keys and values. Other tests
    // may run meanwhile in this process (loading models, filling caches), so the bounds leave them
    // 1 GB; eagerly zeroed, the cache alone would add 2048 MB.
    let before = try #require(Self.residentMB())
    var cache: KVCache? = try KVCache(layerCount: 32, kvDim: 2048, capacityTokens: 4096)
    let allocated = try #require(Self.residentMB())
    #expect(allocated - before < 1024, "an unused cache took \(allocated - before) MB")
    #expect(cache?.capacityTokens == 4096)
    try cache?.addSequence(1)
    #expect(cache?.freeTokens == 4096)
    cache = nil
    let freed = try #require(Self.residentMB())
    #expect(freed - before < 1024, "\(freed - before) MB stayed after the cache was freed")
  }
}
