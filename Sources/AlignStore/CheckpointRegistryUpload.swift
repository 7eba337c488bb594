import Crypto
import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// One checkpoint upload in progress: bytes go to a staging file while their SHA-256 is computed;
/// `finish` verifies and installs them.
///
/// Any error cleans the upload's staging files and ends the upload; so do `abort` and dropping
/// the last reference to an unfinished upload. Thread-safe, though its calls are meant to come
/// in order from one stream.
public final class CheckpointUpload: Sendable {
  /// The validated header (sha256 in lower case).
  public let header: CheckpointHeader
  /// Names the upload's staging files.
  public let id: String
  private let registry: CheckpointRegistry
  private let partPath: String
  private let state: Mutex<State>

  private struct State: ~Copyable {
    var phase: Phase
    var fd: Int32
    var hasher = SHA256()
    var received: UInt64 = 0
  }

  private enum Phase {
    case open
    case finishing
    case finished(CheckpointRecord)
    case failed(CheckpointRegistryError)
    case aborted
  }

  init(registry: CheckpointRegistry, header: CheckpointHeader, id: String, fd: Int32) {
    self.registry = registry
    self.header = header
    self.id = id
    self.partPath = registry.partPath(id)
    self.state = Mutex(State(phase: .open, fd: fd))
  }

  deinit {
    let wasOpen = state.withLock { state in
      guard case .open = state.phase else { return false }
      close(state.fd)
      state.phase = .aborted
      return true
    }
    if wasOpen {
      registry.cleanStaging(id)
      registry.uploadEnded()
    }
  }

  /// The number of bytes appended so far.
  public var receivedBytes: UInt64 {
    state.withLock { $0.received }
  }

  /// Appends the next chunk of the checkpoint's bytes.
  ///
  /// - Throws: `.sizeExceeded` at once if the chunk goes past the declared size (the upload
  ///   then fails); `.diskFull` or `.io` if the staging file cannot be written; `.uploadClosed`
  ///   (or the error that failed it) if the upload has ended.
  public func append(_ chunk: Data) throws(CheckpointRegistryError) {
    let declared = header.sizeBytes
    let path = partPath
    let failure: CheckpointRegistryError? = state.withLock { state in
      guard case .open = state.phase else { return Self.closedError(state.phase) }
      let total = state.received + UInt64(chunk.count)
      let error: CheckpointRegistryError
      if total > declared {
        error = .sizeExceeded(declared: declared, received: total)
      } else {
        do throws(CheckpointRegistryError) {
          try RegistryFS.writeAll(state.fd, chunk, path: path)
          state.hasher.update(data: chunk)
          state.received = total
          return nil
        } catch let writeError {
          error = writeError
        }
      }
      close(state.fd)
      state.phase = .failed(error)
      return error
    }
    if let failure {
      // An upload that had already ended was cleaned up when it ended.
      if case .uploadClosed = failure { throw failure }
      cleanUpAfterFailure()
      throw failure
    }
  }

  /// Verifies the upload (size, then sha256), syncs it and moves it into the registry.
  ///
  /// Calling `finish` again after it succeeded returns the same record.
  ///
  /// - Returns: the new entry's record, or the existing one if the role already holds this
  ///   version with the same content.
  /// - Throws: `.truncated` or `.sha256Mismatch`; `.invalidArchive`, `.archiveTooLarge` or
  ///   `.invalidContent` for bad content; `.versionConflict`; `.diskFull` or `.io`;
  ///   `.uploadClosed` if the upload ended otherwise.
  public func finish() throws(CheckpointRegistryError) -> CheckpointRecord {
    enum Step {
      case proceed(fd: Int32, digest: SHA256.Digest, received: UInt64)
      case done(CheckpointRecord)
      case refused(CheckpointRegistryError)
    }
    let step: Step = state.withLock { state in
      switch state.phase {
      case .open:
        state.phase = .finishing
        return .proceed(fd: state.fd, digest: state.hasher.finalize(), received: state.received)
      case .finished(let record):
        return .done(record)
      default:
        return .refused(Self.closedError(state.phase))
      }
    }
    let fd: Int32
    let digest: SHA256.Digest
    let received: UInt64
    switch step {
    case .done(let record): return record
    case .refused(let error): throw error
    case .proceed(let f, let d, let r): (fd, digest, received) = (f, d, r)
    }

    do throws(CheckpointRegistryError) {
      var fdOpen = true
      defer { if fdOpen { close(fd) } }
      guard received == header.sizeBytes else { throw .truncated(declared: header.sizeBytes, received: received) }
      let actual = Self.hex(digest)
      guard actual == header.sha256 else { throw .sha256Mismatch(declared: header.sha256, actual: actual) }
      try RegistryFS.sync(fd, path: partPath)
      close(fd)
      fdOpen = false
      let record = try registry.install(header, id: id)
      state.withLock { $0.phase = .finished(record) }
      registry.uploadEnded()
      return record
    } catch {
      state.withLock { $0.phase = .failed(error) }
      cleanUpAfterFailure()
      throw error
    }
  }

  /// Abandons the upload and removes its staging files. Does nothing once the upload has
  /// finished, failed or is finishing.
  public func abort() {
    let wasOpen = state.withLock { state in
      guard case .open = state.phase else { return false }
      close(state.fd)
      state.phase = .aborted
      return true
    }
    if wasOpen {
      registry.cleanStaging(id)
      registry.uploadEnded()
    }
  }

  private func cleanUpAfterFailure() {
    registry.cleanStaging(id)
    registry.uploadEnded()
  }

  private static func closedError(_ phase: Phase) -> CheckpointRegistryError {
    switch phase {
    case .open: .uploadClosed(state: "open")
    case .finishing: .uploadClosed(state: "finishing")
    case .finished: .uploadClosed(state: "finished")
    case .failed(let error): .uploadClosed(state: "failed (\(error))")
    case .aborted: .uploadClosed(state: "aborted")
    }
  }

  private static func hex(_ digest: SHA256.Digest) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(64)
    for byte in digest {
      out.append(digits[Int(byte >> 4)])
      out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
  }
}
