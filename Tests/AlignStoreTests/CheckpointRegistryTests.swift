import AlignShared
import AlignStore
import Crypto
import Foundation
import Testing

/// The checkpoint registry through its public API: uploads of each format, the failures the
/// admin issue lists (each must leave the registry untouched and the staging area empty), crash
/// leftovers, listing across restarts and removal.
@Suite("CheckpointRegistry")
struct CheckpointRegistryTests {
  // MARK: Happy paths

  @Test("a GGUF upload in chunks is stored as model.gguf and survives a restart")
  func ggufUpload() throws {
    let dir = try RegistryTestDir()
    let bytes = try RegistryFixtures.ggufBytes()
    let first: CheckpointRecord
    do {
      let registry = try dir.registry()
      first = try upload(bytes, to: registry, role: .policy, name: "tiny-llama.q4_1", format: .gguf, chunk: 7919)
      #expect(first.version == "tiny-llama.q4_1@" + sha256Hex(bytes).prefix(12))
      #expect(first.name == "tiny-llama.q4_1")
      #expect(first.role == .policy)
      #expect(first.format == .gguf)
      #expect(first.sha256 == sha256Hex(bytes))
      #expect(first.sizeBytes == UInt64(bytes.count))
      #expect(first.modelPath == dir.root + "/policy/" + first.version + "/model.gguf")
      #expect(try Data(contentsOf: URL(fileURLWithPath: first.modelPath)) == bytes)
      #expect(abs(first.createdAt.timeIntervalSinceNow) < 60)
      #expect(try registry.checkpoints() == [first])
      #expect(try registry.checkpoints(role: .reward) == [])
      #expect(try registry.record(role: .policy, version: first.version) == first)
      #expect(try registry.record(role: .safety, version: first.version) == nil)
      #expect(try dir.stagingContents() == [])
    }
    let reopened = try dir.registry()
    #expect(try reopened.checkpoints(role: .policy) == [first])
    #expect(try reopened.record(role: .policy, version: first.version) == first)
  }

  /// Tar flavours a client may send: GNU tar's own formats, and this package's writer.
  static let archiveFlavours = ["gnu", "pax", "ustar", "writer"]

  @Test("an hf-safetensors tar is extracted into model/", arguments: archiveFlavours, [false, true])
  func huggingFaceUpload(flavour: String, wrappedInFolder: Bool) throws {
    let dir = try RegistryTestDir()
    let folder = try RegistryFixtures.huggingFaceFolder(in: dir.scratch)
    let tar = try RegistryFixtures.archive(folder, flavour: flavour, wrappedInFolder: wrappedInFolder, in: dir.scratch)
    let registry = try dir.registry()
    let record = try upload(tar, to: registry, role: .policy, name: "tiny-llama", format: .hfSafetensors)
    #expect(record.modelPath == record.entryPath + "/model")
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
      #expect(
        try Data(contentsOf: URL(fileURLWithPath: record.modelPath + "/" + name))
          == Data(contentsOf: URL(fileURLWithPath: folder + "/" + name)), "\(name)")
    }
    #expect(
      try FileManager.default.contentsOfDirectory(atPath: record.entryPath).sorted() == ["checkpoint.json", "model"])
    #expect(try dir.stagingContents() == [])
  }

  @Test("a reward-head tar is accepted for the reward role")
  func rewardHeadUpload() throws {
    let dir = try RegistryTestDir()
    let folder = try RegistryFixtures.rewardHeadFolder(in: dir.scratch)
    let tar = try RegistryFixtures.archive(folder, flavour: "writer", wrappedInFolder: false, in: dir.scratch)
    let registry = try dir.registry()
    let record = try upload(
      tar, to: registry, role: .reward, name: "rm-head-7", format: .rewardHead, labels: ["accuracy": "0.93"])
    #expect(record.labels == ["accuracy": "0.93"])
    #expect(
      try FileManager.default.contentsOfDirectory(atPath: record.modelPath).sorted()
        == ["manifest.json", "reward-head.safetensors"])
    #expect(try registry.checkpoints(role: .reward) == [record])
  }

  @Test("uploading the same content again returns the existing record")
  func idempotentReupload() throws {
    let dir = try RegistryTestDir()
    let bytes = try RegistryFixtures.ggufBytes()
    let registry = try dir.registry()
    let first = try upload(bytes, to: registry, role: .safety, name: "guard", format: .gguf)
    let before = try dir.snapshot()
    let second = try upload(bytes, to: registry, role: .safety, name: "guard", format: .gguf, chunk: 1000)
    #expect(second == first)
    #expect(try dir.snapshot() == before)
    #expect(try registry.checkpoints() == [first])
    #expect(try dir.stagingContents() == [])

    // Other content under the same name is another version.
    var other = bytes
    other.append(contentsOf: [0, 0, 0, 0])
    let third = try upload(other, to: registry, role: .safety, name: "guard", format: .gguf)
    #expect(third.version != first.version)
    #expect(Set(try registry.checkpoints(role: .safety).map(\.version)) == [first.version, third.version])
  }

  @Test("the same version with another format is a conflict, refused before any byte")
  func versionConflict() throws {
    let dir = try RegistryTestDir()
    let bytes = try RegistryFixtures.ggufBytes()
    let registry = try dir.registry()
    _ = try upload(bytes, to: registry, role: .policy, name: "p", format: .gguf)
    let error = #expect(throws: CheckpointRegistryError.self) {
      _ = try registry.beginUpload(header(for: bytes, role: .policy, name: "p", format: .hfSafetensors))
    }
    #expect(error?.category == .failedPrecondition)
    guard case .versionConflict = error else {
      Issue.record("got \(String(describing: error))")
      return
    }
  }

  // MARK: Failures: each leaves the registry as it was and staging empty

  @Test("a truncated upload is refused")
  func truncated() throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let bytes = try RegistryFixtures.ggufBytes()
    _ = try upload(bytes, to: registry, role: .policy, name: "existing", format: .gguf)
    let before = try dir.snapshot()

    let upload = try registry.beginUpload(header(for: bytes, role: .policy, name: "cut", format: .gguf))
    try upload.append(bytes.prefix(bytes.count - 100))
    #expect(
      throws: CheckpointRegistryError.truncated(declared: UInt64(bytes.count), received: UInt64(bytes.count - 100))
    ) {
      _ = try upload.finish()
    }
    try expectUntouched(dir, before)
    // The failed upload stays failed.
    #expect(throws: CheckpointRegistryError.self) { _ = try upload.finish() }
    #expect(throws: CheckpointRegistryError.self) { try upload.append(Data([1])) }
  }

  @Test("a wrong sha256 is refused, naming both digests")
  func wrongSHA256() throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let bytes = try RegistryFixtures.ggufBytes()
    let before = try dir.snapshot()
    var declared = header(for: bytes, role: .policy, name: "bad-sha", format: .gguf)
    declared.sha256 = sha256Hex(Data("something else".utf8))
    let upload = try registry.beginUpload(declared)
    try upload.append(bytes)
    let error = #expect(throws: CheckpointRegistryError.self) { _ = try upload.finish() }
    #expect(error == .sha256Mismatch(declared: declared.sha256, actual: sha256Hex(bytes)))
    #expect(error?.category == .invalidArgument)
    #expect(error?.description.contains(sha256Hex(bytes)) == true)
    try expectUntouched(dir, before)
  }

  @Test("more bytes than declared are refused at the chunk that crosses the size")
  func moreBytesThanDeclared() throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let bytes = try RegistryFixtures.ggufBytes()
    let before = try dir.snapshot()
    var declared = header(for: bytes, role: .policy, name: "liar", format: .gguf)
    declared.sizeBytes = UInt64(bytes.count - 10)
    let upload = try registry.beginUpload(declared)
    try upload.append(bytes.prefix(bytes.count - 20))
    #expect(
      throws: CheckpointRegistryError.sizeExceeded(declared: UInt64(bytes.count - 10), received: UInt64(bytes.count))
    ) {
      try upload.append(bytes.suffix(20))
    }
    try expectUntouched(dir, before)
    #expect(throws: CheckpointRegistryError.self) { _ = try upload.finish() }
  }

  @Test("fewer bytes than declared are refused (the declared size lies the other way)")
  func fewerBytesThanDeclared() throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let bytes = try RegistryFixtures.ggufBytes()
    let before = try dir.snapshot()
    var declared = header(for: bytes, role: .policy, name: "liar", format: .gguf)
    declared.sizeBytes = UInt64(bytes.count + 1)
    let upload = try registry.beginUpload(declared)
    try upload.append(bytes)
    #expect(throws: CheckpointRegistryError.truncated(declared: UInt64(bytes.count + 1), received: UInt64(bytes.count)))
    {
      _ = try upload.finish()
    }
    try expectUntouched(dir, before)
  }

  @Test(
    "role and format pairs outside the allowed set are refused",
    arguments: [
      (CheckpointRole.policy, CheckpointFormat.rewardHead),
      (.safety, .rewardHead),
      (.reward, .gguf),
    ])
  func formatNotAllowed(role: CheckpointRole, format: CheckpointFormat) throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let error = #expect(throws: CheckpointRegistryError.self) {
      _ = try registry.beginUpload(header(for: Data([1, 2, 3]), role: role, name: "x", format: format))
    }
    #expect(error == .formatNotAllowed(role: role, format: format))
    #expect(error?.category == .invalidArgument)
    #expect(try dir.stagingContents() == [])
  }

  @Test("unknown role and format names are refused")
  func unknownNames() {
    #expect(throws: CheckpointRegistryError.unknownFormat("safetensors")) {
      _ = try CheckpointFormat(parsing: "safetensors")
    }
    #expect(throws: CheckpointRegistryError.unknownRole("critic")) { _ = try CheckpointRole(parsing: "critic") }
    #expect((try? CheckpointFormat(parsing: "hf-safetensors")) == .hfSafetensors)
    #expect(CheckpointRegistryError.unknownFormat("x").category == .invalidArgument)
  }

  @Test("bytes that are not the declared format are refused")
  func contentNotMatchingFormat() throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let before = try dir.snapshot()
    let folder = try RegistryFixtures.huggingFaceFolder(in: dir.scratch)
    let tar = try RegistryFixtures.archive(folder, flavour: "gnu", wrappedInFolder: false, in: dir.scratch)
    let gguf = try RegistryFixtures.ggufBytes()

    // A tar declared as GGUF.
    var error = try failingUpload(tar, to: registry, role: .policy, name: "a", format: .gguf)
    guard case .invalidContent(.gguf, _) = error else {
      Issue.record("got \(error)")
      return
    }
    try expectUntouched(dir, before)

    // A GGUF declared as an hf-safetensors tar.
    error = try failingUpload(gguf, to: registry, role: .policy, name: "b", format: .hfSafetensors)
    guard case .invalidArchive = error else {
      Issue.record("got \(error)")
      return
    }
    try expectUntouched(dir, before)

    // An HF tar without config.json, and one without tokenizer.
    for missing in ["config.json", "tokenizer.json"] {
      try FileManager.default.moveItem(atPath: folder + "/" + missing, toPath: dir.scratch + "/" + missing)
      let partial = try RegistryFixtures.archive(folder, flavour: "gnu", wrappedInFolder: false, in: dir.scratch)
      try FileManager.default.moveItem(atPath: dir.scratch + "/" + missing, toPath: folder + "/" + missing)
      error = try failingUpload(partial, to: registry, role: .policy, name: "c", format: .hfSafetensors)
      guard case .invalidContent(.hfSafetensors, let reason) = error else {
        Issue.record("got \(error)")
        return
      }
      #expect(reason.contains(missing == "config.json" ? "config.json" : "tokenizer"))
      try expectUntouched(dir, before)
    }

    // An HF tar given as a reward head.
    error = try failingUpload(tar, to: registry, role: .reward, name: "d", format: .rewardHead)
    guard case .invalidContent(.rewardHead, _) = error else {
      Issue.record("got \(error)")
      return
    }
    try expectUntouched(dir, before)
  }

  static let badNames: [String] = [
    "../x", "/abs", "a/b", ".hidden", "", "..", ".", "a..b", "x y", "a\\b", "naïve", "a\u{0}b",
    String(repeating: "n", count: 101),
  ]

  @Test("names that could leave the registry folder are refused", arguments: badNames)
  func badName(name: String) throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let before = try dir.snapshot()
    let error = #expect(throws: CheckpointRegistryError.self) {
      _ = try registry.beginUpload(header(for: Data([1]), role: .policy, name: name, format: .gguf))
    }
    guard case .invalidName(let rejected, _) = error else {
      Issue.record("got \(String(describing: error))")
      return
    }
    #expect(rejected == name)
    #expect(error?.category == .invalidArgument)
    try expectUntouched(dir, before)
  }

  @Test("plain names are accepted", arguments: ["SmolLM2-135M.v1_dpo", "a", "0", String(repeating: "n", count: 100)])
  func goodName(name: String) throws {
    try CheckpointValidation.validateName(name)
  }

  @Test("headers with a bad size, sha256 or labels are refused")
  func badHeaders() throws {
    let dir = try RegistryTestDir()
    var limits = CheckpointRegistryLimits()
    limits.maxUploadBytes = 1000
    let registry = try dir.registry(limits: limits)
    let good = header(for: Data([1]), role: .policy, name: "h", format: .gguf)

    var bad = good
    bad.sizeBytes = 0
    #expect(throws: CheckpointRegistryError.emptyUpload) { _ = try registry.beginUpload(bad) }

    bad = good
    bad.sizeBytes = 1001
    let tooLarge = #expect(throws: CheckpointRegistryError.self) { _ = try registry.beginUpload(bad) }
    #expect(tooLarge == .uploadTooLarge(declared: 1001, limit: 1000))
    #expect(tooLarge?.category == .resourceExhausted)

    for sha in ["", "abc", String(repeating: "g", count: 64), String(repeating: "a", count: 65)] {
      bad = good
      bad.sha256 = sha
      #expect(throws: CheckpointRegistryError.invalidSHA256(sha)) { _ = try registry.beginUpload(bad) }
    }

    bad = good
    bad.labels = Dictionary(uniqueKeysWithValues: (0..<65).map { ("k\($0)", "v") })
    #expect(throws: CheckpointRegistryError.self) { _ = try registry.beginUpload(bad) }

    // Upper-case hex is accepted and stored in lower case.
    var upper = good
    upper.sha256 = good.sha256.uppercased()
    let upload = try registry.beginUpload(upper)
    #expect(upload.header.sha256 == good.sha256)
    upload.abort()
    #expect(try dir.stagingContents() == [])
  }

  // MARK: Staging, crashes, concurrency

  @Test("abort and dropping an unfinished upload both clean the staging area")
  func abortCleansStaging() throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let bytes = try RegistryFixtures.ggufBytes()
    let upload = try registry.beginUpload(header(for: bytes, role: .policy, name: "x", format: .gguf))
    try upload.append(bytes.prefix(1000))
    #expect(try dir.stagingContents().count == 1)
    upload.abort()
    #expect(try dir.stagingContents() == [])
    #expect(throws: CheckpointRegistryError.uploadClosed(state: "aborted")) { try upload.append(Data([1])) }

    func abandon() throws {
      let dropped = try registry.beginUpload(header(for: bytes, role: .policy, name: "y", format: .gguf))
      try dropped.append(bytes.prefix(1000))
      #expect(try dir.stagingContents().count == 1)
    }
    try abandon()
    #expect(try dir.stagingContents() == [])
    #expect(try registry.checkpoints() == [])
  }

  @Test("leftovers of a crashed process are removed when the registry opens; entries are kept")
  func crashLeftovers() throws {
    let dir = try RegistryTestDir()
    let bytes = try RegistryFixtures.ggufBytes()
    let kept: CheckpointRecord
    do {
      let registry = try dir.registry()
      kept = try upload(bytes, to: registry, role: .policy, name: "kept", format: .gguf)
    }
    let before = try dir.snapshot()
    // What a process killed mid-upload, mid-extraction or mid-removal leaves behind.
    let staging = dir.root + "/staging"
    try Data(bytes.prefix(5000)).write(to: URL(fileURLWithPath: staging + "/0a1b.part"))
    try FileManager.default.createDirectory(
      atPath: staging + "/0a1b.entry/extract/sub", withIntermediateDirectories: true)
    try Data([1, 2, 3]).write(to: URL(fileURLWithPath: staging + "/0a1b.entry/extract/sub/model.safetensors"))
    try FileManager.default.createDirectory(atPath: staging + "/9f.removed/model", withIntermediateDirectories: true)
    try FileManager.default.createSymbolicLink(atPath: staging + "/link", withDestinationPath: dir.root + "/policy")
    #expect(try dir.stagingContents().count == 4)

    let reopened = try dir.registry()
    #expect(try dir.stagingContents() == [])
    #expect(try dir.snapshot() == before)
    #expect(try reopened.checkpoints() == [kept])
  }

  @Test("two registries on one folder (replicas on a shared volume): a live one's staging is kept, a dead one's removed")
  func sharedFolder() throws {
    let dir = try RegistryTestDir()
    let bytes = try RegistryFixtures.ggufBytes()
    let first = try dir.registry()
    let inFlight = try first.beginUpload(header(for: bytes, role: .policy, name: "slow", format: .gguf))
    try inFlight.append(bytes.prefix(1000))
    // A dead process's leftovers: a lock file nobody holds and its staging file.
    let staging = dir.root + "/staging"
    try Data().write(to: URL(fileURLWithPath: staging + "/dead.lock"))
    try Data([1, 2, 3]).write(to: URL(fileURLWithPath: staging + "/dead-0a1b.part"))

    let second = try dir.registry()
    let names = try FileManager.default.contentsOfDirectory(atPath: staging)
    #expect(!names.contains("dead.lock") && !names.contains("dead-0a1b.part"))
    #expect(names.contains { $0.hasPrefix(first.processID + "-") && $0.hasSuffix(".part") }, "the live upload's file was removed: \(names)")
    // Both serve the same entries; the first upload still finishes.
    try inFlight.append(bytes.dropFirst(1000))
    let record = try inFlight.finish()
    #expect(try second.checkpoints() == [record])
    withExtendedLifetime((first, second)) {}
  }

  @Test("concurrent uploads are bounded")
  func concurrentUploadLimit() throws {
    let dir = try RegistryTestDir()
    var limits = CheckpointRegistryLimits()
    limits.maxConcurrentUploads = 1
    let registry = try dir.registry(limits: limits)
    let bytes = try RegistryFixtures.ggufBytes()
    let first = try registry.beginUpload(header(for: bytes, role: .policy, name: "one", format: .gguf))
    let error = #expect(throws: CheckpointRegistryError.self) {
      _ = try registry.beginUpload(header(for: bytes, role: .policy, name: "two", format: .gguf))
    }
    #expect(error == .tooManyUploads(limit: 1))
    #expect(error?.category == .resourceExhausted)
    try first.append(bytes)
    _ = try first.finish()
    _ = try upload(bytes, to: registry, role: .policy, name: "two", format: .gguf)
  }

  @Test("parallel uploads of the same content all get the one record")
  func parallelSameContent() async throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let bytes = try RegistryFixtures.ggufBytes()
    let records = try await withThrowingTaskGroup(of: CheckpointRecord.self) { group in
      for _ in 0..<4 {
        group.addTask { try upload(bytes, to: registry, role: .policy, name: "same", format: .gguf, chunk: 4096) }
      }
      return try await group.reduce(into: []) { $0.append($1) }
    }
    #expect(records.count == 4)
    #expect(Set(records).count == 1)
    #expect(try registry.checkpoints().count == 1)
    #expect(try dir.stagingContents() == [])
  }

  // MARK: Removal and lookup

  @Test("remove deletes one entry; unknown and malformed versions are refused")
  func remove() throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let bytes = try RegistryFixtures.ggufBytes()
    let a = try upload(bytes, to: registry, role: .policy, name: "a", format: .gguf)
    let b = try upload(bytes, to: registry, role: .policy, name: "b", format: .gguf)
    try registry.remove(role: .policy, version: a.version)
    #expect(try registry.checkpoints() == [b])
    #expect(!FileManager.default.fileExists(atPath: a.entryPath))
    #expect(try dir.stagingContents() == [])

    let missing = #expect(throws: CheckpointRegistryError.self) {
      try registry.remove(role: .policy, version: a.version)
    }
    #expect(missing == .notFound(role: .policy, version: a.version))
    #expect(missing?.category == .notFound)
    #expect(throws: CheckpointRegistryError.notFound(role: .safety, version: b.version)) {
      try registry.remove(role: .safety, version: b.version)
    }
    for version in ["../policy/b@" + b.sha256.prefix(12), "b", "b@XYZ", "b@" + b.sha256.prefix(11), "/b@123456789abc"] {
      #expect(throws: CheckpointRegistryError.invalidVersion(version)) {
        try registry.remove(role: .policy, version: version)
      }
      #expect(throws: CheckpointRegistryError.invalidVersion(version)) {
        _ = try registry.record(role: .policy, version: version)
      }
    }
    #expect(try registry.checkpoints() == [b])
  }

  @Test("a damaged checkpoint.json is reported, not skipped")
  func corruptEntry() throws {
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let record = try upload(try RegistryFixtures.ggufBytes(), to: registry, role: .policy, name: "a", format: .gguf)
    try Data("{not json".utf8).write(to: URL(fileURLWithPath: record.entryPath + "/checkpoint.json"))
    let error = #expect(throws: CheckpointRegistryError.self) { _ = try registry.checkpoints() }
    #expect(error?.category == .internal)
    // Foreign files in a role folder are ignored.
    try Data().write(to: URL(fileURLWithPath: dir.root + "/safety/.DS_Store"))
    #expect(try registry.checkpoints(role: .safety) == [])
  }
}

// MARK: - Helpers shared by the registry test suites

/// Lower-case hex SHA-256.
func sha256Hex(_ data: Data) -> String {
  SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
}

/// A header that truthfully describes `bytes`.
func header(
  for bytes: Data, role: CheckpointRole, name: String, format: CheckpointFormat, labels: [String: String] = [:]
) -> CheckpointHeader {
  CheckpointHeader(
    role: role, name: name, format: format, sizeBytes: UInt64(bytes.count), sha256: sha256Hex(bytes), labels: labels)
}

/// Uploads `bytes` in chunks and finishes.
@discardableResult
func upload(
  _ bytes: Data, to registry: CheckpointRegistry, role: CheckpointRole, name: String, format: CheckpointFormat,
  labels: [String: String] = [:], chunk: Int = 65536
) throws -> CheckpointRecord {
  let upload = try registry.beginUpload(header(for: bytes, role: role, name: name, format: format, labels: labels))
  var offset = bytes.startIndex
  while offset < bytes.endIndex {
    let end = min(offset + chunk, bytes.endIndex)
    try upload.append(bytes[offset..<end])
    offset = end
  }
  #expect(upload.receivedBytes == UInt64(bytes.count))
  return try upload.finish()
}

/// Uploads `bytes` expecting `finish` to fail; returns the error.
func failingUpload(
  _ bytes: Data, to registry: CheckpointRegistry, role: CheckpointRole, name: String, format: CheckpointFormat
) throws -> CheckpointRegistryError {
  let upload = try registry.beginUpload(header(for: bytes, role: role, name: name, format: format))
  try upload.append(bytes)
  do {
    let record = try upload.finish()
    Issue.record("upload unexpectedly succeeded: \(record.version)")
    return .uploadClosed(state: "finished")
  } catch {
    return error
  }
}

/// The registry looks as it did, and no staging file is left.
func expectUntouched(
  _ dir: RegistryTestDir, _ before: [String: String], sourceLocation: SourceLocation = #_sourceLocation
)
  throws
{
  #expect(try dir.stagingContents() == [], sourceLocation: sourceLocation)
  #expect(try dir.snapshot() == before, sourceLocation: sourceLocation)
}

/// A temporary folder holding a registry root and a scratch folder, removed at deinit.
final class RegistryTestDir {
  let base: String
  var root: String { base + "/checkpoints" }
  var scratch: String { base + "/scratch" }

  init() throws {
    base = FileManager.default.temporaryDirectory.appendingPathComponent("registry-test-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: base + "/scratch", withIntermediateDirectories: true)
  }

  deinit {
    try? FileManager.default.removeItem(atPath: base)
  }

  func registry(limits: CheckpointRegistryLimits = .default) throws -> CheckpointRegistry {
    try CheckpointRegistry(root: root, limits: limits)
  }

  /// Staging entries, without the lock files of live registries (a process's "<id>.lock").
  func stagingContents() throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: root + "/staging").filter { !$0.hasSuffix(".lock") }.sorted()
  }

  /// Every path under the root except staging/, with its size and modification time.
  func snapshot() throws -> [String: String] {
    var result: [String: String] = [:]
    let manager = FileManager.default
    for path in try manager.subpathsOfDirectory(atPath: root) where path != "staging" && !path.hasPrefix("staging/") {
      let attributes = try manager.attributesOfItem(atPath: root + "/" + path)
      let size = (attributes[.size] as? NSNumber)?.int64Value ?? -1
      let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? -1
      result[path] = "\(size) \(modified)"
    }
    return result
  }
}

/// Inputs built from the committed engine fixtures (made by Tests/Fixtures/tiny-models/*.py and
/// Tests/Fixtures/tokenizers) or, for the reward head whose format the score issue defines,
/// assembled here.
enum RegistryFixtures {
  static let fixtures = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // AlignStoreTests
    .deletingLastPathComponent()  // Tests
    .appendingPathComponent("Fixtures").path

  /// A real tiny GGUF (llama, Q4_1) written by gguf-py.
  static func ggufBytes() throws -> Data {
    try Data(contentsOf: URL(fileURLWithPath: fixtures + "/tiny-models/gguf/llama-q4_1.gguf"))
  }

  /// A Hugging Face folder: the tiny llama's config.json and model.safetensors with a
  /// tokenizer.json, in `parent/hf-model`.
  static func huggingFaceFolder(in parent: String) throws -> String {
    let folder = parent + "/hf-model"
    let manager = FileManager.default
    try manager.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try manager.copyItem(atPath: fixtures + "/tiny-models/llama-f32/config.json", toPath: folder + "/config.json")
    try manager.copyItem(
      atPath: fixtures + "/tiny-models/llama-f32/model.safetensors", toPath: folder + "/model.safetensors")
    try manager.copyItem(
      atPath: fixtures + "/tokenizers/llama2-style/tokenizer.json", toPath: folder + "/tokenizer.json")
    return folder
  }

  /// A reward-head folder: a one-tensor safetensors file and a manifest, in `parent/reward-head`.
  static func rewardHeadFolder(in parent: String) throws -> String {
    let folder = parent + "/reward-head"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let weights: [Float] = [0.5, -0.25, 0.125, 1]
    var json = Array(#"{"weight":{"dtype":"F32","shape":[1,4],"data_offsets":[0,16]}}"#.utf8)
    while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
    var file = Data()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
    file.append(contentsOf: json)
    for weight in weights { withUnsafeBytes(of: weight.bitPattern.littleEndian) { file.append(contentsOf: $0) } }
    try file.write(to: URL(fileURLWithPath: folder + "/reward-head.safetensors"))
    try Data(#"{"base_model_sha256":"00","hidden_size":4}"#.utf8).write(
      to: URL(fileURLWithPath: folder + "/manifest.json"))
    return folder
  }

  /// Tars `folder` (its contents, or the folder itself when `wrappedInFolder`) with GNU tar in
  /// the given `--format`, or with `TarWriter` for "writer"; returns the archive's bytes.
  static func archive(_ folder: String, flavour: String, wrappedInFolder: Bool, in parent: String) throws -> Data {
    let path = parent + "/\(UUID().uuidString).tar"
    let folderURL = URL(fileURLWithPath: folder)
    if flavour == "writer" {
      if wrappedInFolder {
        let writer = try TarWriter(path: path)
        let name = folderURL.lastPathComponent
        try writer.addDirectory(name)
        for file in try FileManager.default.contentsOfDirectory(atPath: folder).sorted() {
          try writer.addFile(name + "/" + file, fromFileAt: folder + "/" + file)
        }
        try writer.finish()
      } else {
        try TarWriter.archive(directory: folder, to: path)
      }
    } else {
      let arguments =
        wrappedInFolder
        ? [
          "--format=\(flavour)", "-cf", path, "-C", folderURL.deletingLastPathComponent().path,
          folderURL.lastPathComponent,
        ]
        : ["--format=\(flavour)", "-cf", path, "-C", folder, "."]
      try runTar(arguments)
    }
    return try Data(contentsOf: URL(fileURLWithPath: path))
  }

  /// Runs /usr/bin/tar and requires it to succeed.
  static func runTar(_ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
    process.arguments = arguments
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "tar \(arguments) failed"])
    }
  }
}
