import AlignShared
import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// The on-disk checkpoint registry: uploaded checkpoints, verified and stored one folder each.
///
/// Layout under `root` (e.g. `<data_dir>/checkpoints`):
///
///     registry.lock                      held (flock) while a registry is open on the folder
///     staging/                           uploads in progress; emptied when a registry opens
///     <role>/<name>@<sha12>/             one entry per checkpoint
///         checkpoint.json                the record, written before the entry is renamed in
///         model.gguf | model/            the model file (GGUF) or folder (extracted archive)
///
/// An entry appears only by an atomic rename of a complete, synced folder from `staging/`, and
/// disappears by a rename back into `staging/` before it is deleted, so a crash at any point
/// leaves either a whole entry or leftovers in `staging/`, which the next `init` removes. The
/// registry knows nothing of which version is active: the caller keeps that state and checks it
/// before `remove`.
///
/// Thread-safe. One process at a time may open a root (enforced with a lock file).
public final class CheckpointRegistry: Sendable {
  /// The registry folder.
  public let root: String
  /// Bounds on uploads.
  public let limits: CheckpointRegistryLimits
  let stagingPath: String
  /// This process's prefix for its staging files; several processes (replicas sharing one
  /// registry folder) each stage their own files and clean only what a dead process left.
  public let processID = UUID().uuidString.lowercased()
  /// The descriptor holding `staging/<processID>.lock` (taken at the first upload or removal).
  private let processLock = Mutex<Int32?>(nil)
  /// Uploads in progress. Also serializes the final rename of an entry in or out, so that two
  /// uploads of the same version cannot both rename into place.
  private let activeUploads = Mutex<Int>(0)

  /// Opens (creating if needed) the registry at `root`, and removes whatever a crashed process
  /// left in `staging/`. Several processes (replicas on a shared volume) may open one folder:
  /// each keeps its staging files under its own locked prefix, and only a dead process's go.
  ///
  /// - Parameters:
  ///   - root: the registry folder; missing parent folders are created.
  ///   - limits: bounds on uploads.
  /// - Throws: `.io` if the folders cannot be created.
  public init(root: String, limits: CheckpointRegistryLimits = .default) throws(CheckpointRegistryError) {
    let root = URL(fileURLWithPath: root).standardizedFileURL.path
    self.root = root
    self.limits = limits
    self.stagingPath = root + "/staging"
    do {
      try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    } catch {
      throw .io(operation: "create folder", path: root, detail: "\(error)")
    }
    // Staging files are named "<process id>-…"; a process holds "<process id>.lock" while it
    // lives. Everything not belonging to a live process is a crashed upload's, and goes.
    try RegistryFS.makeDirectory(stagingPath)
    let names = try RegistryFS.contents(stagingPath)
    var live = Set<String>()
    for name in names where name.hasSuffix(".lock") {
      let path = stagingPath + "/" + name
      let fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
      guard fd >= 0 else { continue }
      if flock(fd, LOCK_EX | LOCK_NB) != 0 { live.insert(String(name.dropLast(5))) }
      close(fd)
    }
    for name in names where !live.contains(where: { name == $0 + ".lock" || name.hasPrefix($0 + "-") }) {
      RegistryFS.removeTree(stagingPath + "/" + name)
    }
    try RegistryFS.syncDirectory(stagingPath)
    for role in CheckpointRole.allCases {
      try RegistryFS.makeDirectory(root + "/" + role.rawValue)
    }
    try RegistryFS.syncDirectory(root)
  }

  deinit {
    processLock.withLock { fd in
      if let fd {
        unlink(stagingPath + "/" + processID + ".lock")
        close(fd)
      }
    }
  }

  /// Takes this process's staging lock once, so other processes opening the registry keep its
  /// staging files. The lock is taken on a temporary name and then renamed into place, so a
  /// concurrent cleanup never mistakes a half-created lock for a dead one.
  func holdStagingLock() throws(CheckpointRegistryError) {
    try processLock.withLock { (fd: inout Int32?) throws(CheckpointRegistryError) in
      guard fd == nil else { return }
      let final = stagingPath + "/" + processID + ".lock"
      let temporary = stagingPath + "/" + processID + "-lock"
      let descriptor = open(temporary, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
      guard descriptor >= 0 else { throw RegistryFS.error("open", temporary, errno) }
      guard flock(descriptor, LOCK_EX | LOCK_NB) == 0, Foundation.rename(temporary, final) == 0 else {
        let code = errno
        close(descriptor)
        unlink(temporary)
        throw RegistryFS.error("lock", final, code)
      }
      fd = descriptor
    }
  }

  // MARK: Uploads

  /// Starts an upload: validates the header and creates the staging file the bytes go to.
  ///
  /// - Parameter header: what the client declares.
  /// - Returns: the upload; feed it with `append`, then call `finish` (or `abort`).
  /// - Throws: `invalidArgument`-category errors for a bad name, role/format pair, size, sha256
  ///   or labels; `.uploadTooLarge` / `.tooManyUploads`; `.versionConflict` if the role already
  ///   holds this version with other content; `.io` if the staging file cannot be created.
  public func beginUpload(_ header: CheckpointHeader) throws(CheckpointRegistryError) -> CheckpointUpload {
    let header = try CheckpointValidation.validate(header, limits: limits)
    let version = ModelFingerprint.version(name: header.name, sha256: header.sha256)
    if let existing = try loadRecord(role: header.role, version: version) {
      try Self.checkSameContent(existing, header)
    }
    let limit = limits.maxConcurrentUploads
    try activeUploads.withLock { (count) throws(CheckpointRegistryError) in
      guard count < limit else { throw .tooManyUploads(limit: limit) }
      count += 1
    }
    let id = processID + "-" + UUID().uuidString.lowercased()
    do {
      try holdStagingLock()
      let fd = try RegistryFS.createFile(partPath(id))
      return CheckpointUpload(registry: self, header: header, id: id, fd: fd)
    } catch {
      uploadEnded()
      throw error
    }
  }

  /// Called once by each upload when it finishes, fails or is aborted.
  func uploadEnded() {
    activeUploads.withLock { $0 -= 1 }
  }

  func partPath(_ id: String) -> String { stagingPath + "/" + id + ".part" }
  func entryStagingPath(_ id: String) -> String { stagingPath + "/" + id + ".entry" }

  /// Removes an upload's staging files.
  func cleanStaging(_ id: String) {
    RegistryFS.removeTree(partPath(id))
    RegistryFS.removeTree(entryStagingPath(id))
  }

  /// Turns a verified, synced staging file into a registry entry (or returns the entry that
  /// already holds the same content). The caller cleans the staging files on error.
  func install(_ header: CheckpointHeader, id: String) throws(CheckpointRegistryError) -> CheckpointRecord {
    let version = ModelFingerprint.version(name: header.name, sha256: header.sha256)
    if let existing = try loadRecord(role: header.role, version: version) {
      try Self.checkSameContent(existing, header)
      cleanStaging(id)
      return existing
    }
    let entry = entryStagingPath(id)
    try RegistryFS.makeDirectory(entry)
    let part = partPath(id)
    if header.format.isArchive {
      let extracted = entry + "/extract"
      try RegistryFS.makeDirectory(extracted)
      _ = try TarArchive.extract(
        archiveAt: part, into: extracted,
        limits: TarExtractionLimits(maxTotalBytes: limits.maxExtractedBytes, maxEntries: limits.maxArchiveEntries))
      RegistryFS.removeTree(part)
      // A tar of the folder itself ("model/config.json", ...) rather than of its contents.
      let top = try RegistryFS.contents(extracted)
      if top.count == 1, RegistryFS.kind(extracted + "/" + top[0]) == .directory {
        try RegistryFS.rename(extracted + "/" + top[0], to: entry + "/model")
        RegistryFS.removeTree(extracted)
      } else {
        try RegistryFS.rename(extracted, to: entry + "/model")
      }
      if header.format == .rewardHead {
        try CheckpointContentCheck.checkRewardHead(entry + "/model")
      } else if header.format == .embeddingHead {
        try CheckpointContentCheck.checkEmbeddingHead(entry + "/model")
      } else {
        try CheckpointContentCheck.checkHuggingFaceFolder(entry + "/model")
      }
    } else {
      try CheckpointContentCheck.checkGGUF(at: part)
      try RegistryFS.rename(part, to: entry + "/model.gguf")
    }

    let stored = StoredCheckpoint(
      formatVersion: StoredCheckpoint.currentFormatVersion, version: version, name: header.name,
      role: header.role, format: header.format, sha256: header.sha256, sizeBytes: header.sizeBytes,
      createdAtUnixMs: Int64((Date().timeIntervalSince1970 * 1000).rounded()), labels: header.labels)
    try writeRecordFile(stored, in: entry)
    try RegistryFS.syncDirectory(entry)

    let destination = entryPath(role: header.role, version: version)
    let winner: CheckpointRecord? = try activeUploads.withLock { (_) throws(CheckpointRegistryError) in
      // Another upload of the same version may have been installed since the check above.
      if let existing = try loadRecord(role: header.role, version: version) { return existing }
      try RegistryFS.rename(entry, to: destination)
      try RegistryFS.syncDirectory(root + "/" + header.role.rawValue)
      return nil
    }
    if let winner {
      try Self.checkSameContent(winner, header)
      cleanStaging(id)
      return winner
    }
    return record(stored, at: destination)
  }

  private static func checkSameContent(_ existing: CheckpointRecord, _ header: CheckpointHeader)
    throws(CheckpointRegistryError)
  {
    if existing.sha256 != header.sha256 {
      throw .versionConflict(
        version: existing.version, reason: "stored sha256 \(existing.sha256), uploaded sha256 \(header.sha256)")
    }
    if existing.format != header.format {
      throw .versionConflict(
        version: existing.version,
        reason: "stored format \(existing.format.rawValue), uploaded format \(header.format.rawValue)")
    }
  }

  // MARK: Listing and lookup

  /// The registered checkpoints, oldest first (ties by version).
  ///
  /// - Parameter role: only this role; nil lists all roles.
  /// - Throws: `.corruptEntry` if an entry's `checkpoint.json` is damaged; `.io` if a folder
  ///   cannot be listed.
  public func checkpoints(role: CheckpointRole? = nil) throws(CheckpointRegistryError) -> [CheckpointRecord] {
    var records: [CheckpointRecord] = []
    for role in role.map({ [$0] }) ?? CheckpointRole.allCases {
      for name in try RegistryFS.contents(root + "/" + role.rawValue) {
        // Anything not named like a version was not put there by the registry.
        guard (try? CheckpointValidation.validateVersion(name)) != nil else { continue }
        // nil: removed since the listing.
        if let record = try loadRecord(role: role, version: name) { records.append(record) }
      }
    }
    return records.sorted {
      ($0.createdAtUnixMs, $0.role.rawValue, $0.version) < ($1.createdAtUnixMs, $1.role.rawValue, $1.version)
    }
  }

  /// The checkpoint with this version in this role, or nil.
  ///
  /// - Throws: `.invalidVersion` for a malformed version string; `.corruptEntry` if the entry
  ///   is damaged.
  public func record(role: CheckpointRole, version: String) throws(CheckpointRegistryError) -> CheckpointRecord? {
    try CheckpointValidation.validateVersion(version)
    return try loadRecord(role: role, version: version)
  }

  /// Deletes a checkpoint. The registry refuses nothing: the caller checks that the version is
  /// neither active nor a canary.
  ///
  /// - Throws: `.invalidVersion`; `.notFound` if the role has no such version; `.io`.
  public func remove(role: CheckpointRole, version: String) throws(CheckpointRegistryError) {
    try CheckpointValidation.validateVersion(version)
    let entry = entryPath(role: role, version: version)
    let graveyard = stagingPath + "/" + processID + "-" + UUID().uuidString.lowercased() + ".removed"
    try holdStagingLock()
    try activeUploads.withLock { (_) throws(CheckpointRegistryError) in
      guard RegistryFS.kind(entry) == .directory else { throw .notFound(role: role, version: version) }
      try RegistryFS.rename(entry, to: graveyard)
      try RegistryFS.syncDirectory(root + "/" + role.rawValue)
    }
    // If this fails or the process dies, the next init removes the rest.
    RegistryFS.removeTree(graveyard)
  }

  // MARK: Entries on disk

  func entryPath(role: CheckpointRole, version: String) -> String {
    root + "/" + role.rawValue + "/" + version
  }

  /// Reads an entry's record; nil if there is no entry. `version` must already be valid.
  func loadRecord(role: CheckpointRole, version: String) throws(CheckpointRegistryError) -> CheckpointRecord? {
    let entry = entryPath(role: role, version: version)
    switch RegistryFS.kind(entry) {
    case .missing: return nil
    case .directory: break
    case .file, .other: throw .corruptEntry(path: entry, detail: "not a folder")
    }
    let file = entry + "/" + StoredCheckpoint.fileName
    let data: Data
    do {
      data = try RegistryFS.readSmallFile(file, limit: StoredCheckpoint.maxBytes)
    } catch {
      if RegistryFS.kind(entry) == .missing { return nil }  // removed meanwhile
      throw .corruptEntry(path: entry, detail: "\(StoredCheckpoint.fileName): \(error)")
    }
    let stored: StoredCheckpoint
    do {
      stored = try JSONDecoder().decode(StoredCheckpoint.self, from: data)
    } catch {
      throw .corruptEntry(path: entry, detail: "\(StoredCheckpoint.fileName) cannot be decoded (\(error))")
    }
    guard stored.version == version, stored.role == role,
      stored.version == ModelFingerprint.version(name: stored.name, sha256: stored.sha256)
    else {
      throw .corruptEntry(
        path: entry, detail: "\(StoredCheckpoint.fileName) names \(stored.role.rawValue)/\(stored.version)")
    }
    let result = record(stored, at: entry)
    let expected: RegistryFS.Kind = stored.format.isArchive ? .directory : .file
    guard RegistryFS.kind(result.modelPath) == expected else {
      throw .corruptEntry(path: entry, detail: "\(result.modelPath) is missing")
    }
    return result
  }

  private func record(_ stored: StoredCheckpoint, at entry: String) -> CheckpointRecord {
    CheckpointRecord(
      version: stored.version, name: stored.name, role: stored.role, format: stored.format,
      sha256: stored.sha256, sizeBytes: stored.sizeBytes, createdAtUnixMs: stored.createdAtUnixMs,
      labels: stored.labels,
      modelPath: entry + (stored.format.isArchive ? "/model" : "/model.gguf"), entryPath: entry)
  }

  private func writeRecordFile(_ stored: StoredCheckpoint, in entry: String) throws(CheckpointRegistryError) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data: Data
    do {
      data = try encoder.encode(stored)
    } catch {
      throw .io(operation: "encode", path: entry + "/" + StoredCheckpoint.fileName, detail: "\(error)")
    }
    let path = entry + "/" + StoredCheckpoint.fileName
    let fd = try RegistryFS.createFile(path)
    defer { close(fd) }
    try RegistryFS.writeAll(fd, data, path: path)
    try RegistryFS.sync(fd, path: path)
  }
}

/// The contents of an entry's `checkpoint.json`.
struct StoredCheckpoint: Codable {
  static let fileName = "checkpoint.json"
  static let maxBytes = 1 << 20
  static let currentFormatVersion = 1

  var formatVersion: Int
  var version: String
  var name: String
  var role: CheckpointRole
  var format: CheckpointFormat
  var sha256: String
  var sizeBytes: UInt64
  var createdAtUnixMs: Int64
  var labels: [String: String]

  enum CodingKeys: String, CodingKey {
    case formatVersion = "format_version"
    case version, name, role, format, sha256
    case sizeBytes = "size_bytes"
    case createdAtUnixMs = "created_at_unix_ms"
    case labels
  }
}
