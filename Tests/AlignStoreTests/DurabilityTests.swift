import AlignStore
import Foundation
import Testing

@Suite("SQLiteFeedbackStore: durability and damaged files")
struct DurabilityTests {
  @Test("records and state survive close and reopen; ids keep increasing")
  func closeAndReopen() async throws {
    let folder = try TemporaryFolder()
    defer { folder.remove() }
    var store: SQLiteFeedbackStore? = try SQLiteFeedbackStore(dataDirectory: folder.url)
    let ids = try await store!.append(Make.oneOfEach(prefix: "x")).storedIDs
    try await store!.setState(key: "active.policy", value: "smol@7")
    let before = try await store!.export(FeedbackFilter())
    try store!.close()
    await #expect(throws: FeedbackStoreError.self) { try await store!.counts() }
    store = nil

    let reopened = try SQLiteFeedbackStore(dataDirectory: folder.url)
    #expect(try await reopened.export(FeedbackFilter()) == before)
    #expect(try await reopened.state(key: "active.policy") == "smol@7")
    let again = try await reopened.append([Make.comment("x-c"), Make.comment("y")])
    #expect(again[0] == .duplicate(existingID: ids[4]))
    #expect(again[1].id! > ids.max()!)
  }

  @Test("the writer runs in WAL mode with synchronous = FULL")
  func walAndFullSync() async throws {
    let folder = try TemporaryFolder()
    defer { folder.remove() }
    let store = try SQLiteFeedbackStore(dataDirectory: folder.url)
    let settings = try await store.storageSettings()
    #expect(settings.journalMode == "wal")
    #expect(settings.synchronous == 2)
  }

  @Test("a file that is not a database fails with an error naming it")
  func notADatabase() throws {
    let folder = try TemporaryFolder()
    defer { folder.remove() }
    let file = folder.url.appendingPathComponent(SQLiteFeedbackStore.defaultFileName)
    try Data(repeating: 0x5A, count: 8192).write(to: file)
    do {
      _ = try SQLiteFeedbackStore(dataDirectory: folder.url)
      Issue.record("opening garbage succeeded")
    } catch let error as FeedbackStoreError {
      guard case .notADatabase(let path, _) = error else {
        Issue.record("expected notADatabase, got \(error)")
        return
      }
      #expect(path == file.path)
      #expect(error.description.contains(file.path))
    }
  }

  @Test("a damaged database fails at open with an error naming it")
  func corruptPages() async throws {
    let folder = try TemporaryFolder()
    defer { folder.remove() }
    let file = folder.url.appendingPathComponent(SQLiteFeedbackStore.defaultFileName)
    do {
      let store = try SQLiteFeedbackStore(dataDirectory: folder.url)
      for batch in 0..<10 {
        _ = try await store.append(
          (0..<32).map {
            Make.comment("c\(batch)-\($0)", text: String(repeating: "text \($0) ", count: 100))
          })
      }
      try await store.checkpoint()  // everything into the main file, WAL emptied
      try store.close()
    }
    let wal =
      (try? Data(
        contentsOf: folder.url.appendingPathComponent(SQLiteFeedbackStore.defaultFileName + "-wal")))
      ?? Data()
    #expect(wal.isEmpty)
    var bytes = try Data(contentsOf: file)
    try #require(bytes.count > 64 * 1024)
    // Keep the header page intact; scribble over the middle of the file (b-tree pages).
    let start = bytes.count / 3
    for i in start..<(start + 16 * 1024) { bytes[i] = UInt8(truncatingIfNeeded: i &* 31) }
    try bytes.write(to: file)
    do {
      _ = try SQLiteFeedbackStore(dataDirectory: folder.url)
      Issue.record("opening a damaged file succeeded")
    } catch let error as FeedbackStoreError {
      guard case .corrupt(let path, _) = error else {
        Issue.record("expected corrupt, got \(error)")
        return
      }
      #expect(path == file.path)
    }
  }

  @Test("a folder that cannot be created fails with cannotOpen")
  func cannotOpen() throws {
    let folder = try TemporaryFolder()
    defer { folder.remove() }
    let blocker = folder.url.appendingPathComponent("file")
    try Data("x".utf8).write(to: blocker)
    #expect(throws: FeedbackStoreError.self) {
      _ = try SQLiteFeedbackStore(dataDirectory: blocker.appendingPathComponent("data"))
    }
  }
}

@Suite("SQLiteFeedbackStore: crash images")
struct CrashImageTests {
  /// Copies the database and its WAL (not the -shm index, which a power loss may lose and SQLite
  /// rebuilds) byte for byte: what the disk holds if the process dies right now.
  static func snapshot(_ source: URL, into folder: URL) throws -> (db: Data, wal: Data) {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let db = try Data(
      contentsOf: source.appendingPathComponent(SQLiteFeedbackStore.defaultFileName))
    let walURL = source.appendingPathComponent(SQLiteFeedbackStore.defaultFileName + "-wal")
    let wal = (try? Data(contentsOf: walURL)) ?? Data()
    try db.write(to: folder.appendingPathComponent(SQLiteFeedbackStore.defaultFileName))
    try wal.write(to: folder.appendingPathComponent(SQLiteFeedbackStore.defaultFileName + "-wal"))
    return (db, wal)
  }

  /// Opens a crash image and returns key → id of everything in it, checking no key is doubled.
  static func contents(of folder: URL) async throws -> [String: Int64] {
    let store = try SQLiteFeedbackStore(dataDirectory: folder)
    let rows = try await store.export(FeedbackFilter())
    var byKey: [String: Int64] = [:]
    for row in rows {
      #expect(byKey[row.item.idempotencyKey] == nil, "key \(row.item.idempotencyKey) stored twice")
      byKey[row.item.idempotencyKey] = row.id
    }
    #expect(rows.map(\.id) == rows.map(\.id).sorted())
    try store.close()
    return byKey
  }

  @Test("every acknowledged record is in a mid-run image exactly once, and nothing else")
  func midRunImages() async throws {
    let root = try TemporaryFolder()
    defer { root.remove() }
    let live = root.url.appendingPathComponent("live")
    let store = try SQLiteFeedbackStore(dataDirectory: live)
    // ~2.5 KB per record × 32 × 60 batches ≈ 5 MB: more than SQLite's 1000-page auto-checkpoint,
    // so some images are taken after frames moved from the WAL into the main file.
    let batches = 60
    let snapshotsAt: Set<Int> = [0, 7, 19, 33, 47, 59]
    var acknowledged: [String: Int64] = [:]
    var images: [(folder: URL, expected: [String: Int64])] = []
    var mainFileSizes: [Int] = []
    for batch in 0..<batches {
      var items = (0..<32).map {
        Make.comment(
          "b\(batch)-\($0)", text: "batch \(batch) item \($0) " + String(repeating: "∑", count: 800)
        )
      }
      if batch > 0 { items.append(Make.comment("b\(batch - 1)-0")) }  // a resend of an acknowledged one
      let outcomes = try await store.append(items)
      for (item, outcome) in zip(items, outcomes) {
        switch outcome {
        case .stored(let id):
          #expect(acknowledged[item.idempotencyKey] == nil)
          acknowledged[item.idempotencyKey] = id
        case .duplicate(let id):
          #expect(acknowledged[item.idempotencyKey] == id)
        case .rejected(let reason):
          Issue.record("rejected: \(reason)")
        }
      }
      if snapshotsAt.contains(batch) {
        let folder = root.url.appendingPathComponent("image-\(batch)")
        mainFileSizes.append(try Self.snapshot(live, into: folder).db.count)
        images.append((folder, acknowledged))
      }
    }
    #expect(acknowledged.count == batches * 32)
    // Some images were taken after a checkpoint had moved records into the main file.
    #expect(
      mainFileSizes.last! > mainFileSizes.first! + 1_000_000, "main file sizes \(mainFileSizes)")
    for image in images {
      let found = try await Self.contents(of: image.folder)
      #expect(found == image.expected, "image \(image.folder.lastPathComponent)")
    }
    // An image is a working store: it takes new records after the last acknowledged id.
    let lastImage = try SQLiteFeedbackStore(dataDirectory: images.last!.folder)
    let next = try await lastImage.append([Make.comment("after-crash")])
    #expect(next[0].id! > acknowledged.values.max()!)
  }

  @Test("a torn write of the next commit leaves exactly the acknowledged records")
  func tornWAL() async throws {
    let root = try TemporaryFolder()
    defer { root.remove() }
    let live = root.url.appendingPathComponent("live")
    let store = try SQLiteFeedbackStore(dataDirectory: live)
    var acknowledged: [String: Int64] = [:]
    for batch in 0..<3 {
      let items = (0..<32).map { Make.comment("a\(batch)-\($0)") }
      for (item, id) in zip(items, try await store.append(items).storedIDs) {
        acknowledged[item.idempotencyKey] = id
      }
    }
    let before = try Self.snapshot(live, into: root.url.appendingPathComponent("before"))
    _ = try await store.append(
      (0..<32).map { Make.comment("late-\($0)", text: String(repeating: "z", count: 3000)) })
    let after = try Self.snapshot(live, into: root.url.appendingPathComponent("after"))
    // The next commit only appended frames to the WAL (no checkpoint in between).
    #expect(after.wal.count > before.wal.count)
    #expect(after.wal.prefix(before.wal.count) == before.wal)

    // Cut the WAL inside the next commit's frames, as a power loss mid-write would.
    for cut in [
      before.wal.count + 100, (before.wal.count + after.wal.count) / 2, after.wal.count - 1,
    ] {
      let folder = root.url.appendingPathComponent("torn-\(cut)")
      try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
      try before.db.write(to: folder.appendingPathComponent(SQLiteFeedbackStore.defaultFileName))
      try after.wal.prefix(cut).write(
        to: folder.appendingPathComponent(SQLiteFeedbackStore.defaultFileName + "-wal"))
      #expect(try await Self.contents(of: folder) == acknowledged, "cut at \(cut)")
    }
    // Uncut, the image has the late commit too.
    let full = try await Self.contents(of: root.url.appendingPathComponent("after"))
    #expect(full.count == acknowledged.count + 32)
  }
}
