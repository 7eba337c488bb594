import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// The POSIX calls the registry and the tar code need, with errors turned into
/// `CheckpointRegistryError` (ENOSPC and EDQUOT become `diskFull`, the rest `io`).
///
/// The registry uses file descriptors rather than FileHandle because durability needs fsync on
/// files and folders and O_EXCL | O_NOFOLLOW on creation, and errors need errno.
enum RegistryFS {
  /// What `lstat` finds at a path (symbolic links are not followed).
  enum Kind: Equatable {
    case missing, file, directory, other
  }

  static func error(_ operation: String, _ path: String, _ code: Int32) -> CheckpointRegistryError {
    if code == ENOSPC || code == EDQUOT { return .diskFull(path: path) }
    return .io(operation: operation, path: path, detail: String(cString: strerror(code)))
  }

  static func kind(_ path: String) -> Kind {
    var info = stat()
    guard lstat(path, &info) == 0 else { return .missing }
    switch info.st_mode & S_IFMT {
    case S_IFREG: return .file
    case S_IFDIR: return .directory
    default: return .other
    }
  }

  /// Creates a folder; one that already exists is fine.
  static func makeDirectory(_ path: String) throws(CheckpointRegistryError) {
    if mkdir(path, 0o755) == 0 { return }
    let code = errno
    if code == EEXIST && kind(path) == .directory { return }
    throw error("create folder", path, code)
  }

  /// Creates a new regular file for writing; fails if anything exists at `path`.
  static func createFile(_ path: String) throws(CheckpointRegistryError) -> Int32 {
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw error("create", path, errno) }
    return fd
  }

  static func openForReading(_ path: String) throws(CheckpointRegistryError) -> Int32 {
    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    guard fd >= 0 else { throw error("open", path, errno) }
    return fd
  }

  static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(CheckpointRegistryError) {
    guard var base = bytes.baseAddress else { return }
    var remaining = bytes.count
    while remaining > 0 {
      let written = write(fd, base, remaining)
      if written < 0 {
        if errno == EINTR { continue }
        throw error("write", path, errno)
      }
      remaining -= written
      base += written
    }
  }

  static func writeAll(_ fd: Int32, _ data: Data, path: String) throws(CheckpointRegistryError) {
    let result: CheckpointRegistryError? = data.withUnsafeBytes { buffer in
      do throws(CheckpointRegistryError) {
        try writeAll(fd, buffer, path: path)
        return nil
      } catch { return error }
    }
    if let result { throw result }
  }

  /// Reads until `buffer` is full or the file ends; returns the number of bytes read.
  static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String)
    throws(CheckpointRegistryError) -> Int
  {
    guard let base = buffer.baseAddress else { return 0 }
    var total = 0
    while total < buffer.count {
      let count = read(fd, base + total, buffer.count - total)
      if count < 0 {
        if errno == EINTR { continue }
        throw error("read", path, errno)
      }
      if count == 0 { break }
      total += count
    }
    return total
  }

  static func sync(_ fd: Int32, path: String) throws(CheckpointRegistryError) {
    guard fsync(fd) == 0 else { throw error("sync", path, errno) }
  }

  /// Makes a folder's entries (creations, renames, removals) durable.
  static func syncDirectory(_ path: String) throws(CheckpointRegistryError) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw error("open folder", path, errno) }
    defer { close(fd) }
    try sync(fd, path: path)
  }

  /// Renames atomically; fails if `destination` is a non-empty folder.
  static func rename(_ source: String, to destination: String) throws(CheckpointRegistryError) {
    guard posixRename(source, destination) == 0 else {
      throw error("rename to \(destination)", source, errno)
    }
  }

  /// Removes a file or a folder tree, ignoring a missing path. Symbolic links are removed, not
  /// followed.
  static func removeTree(_ path: String) {
    guard kind(path) != .missing else { return }
    try? FileManager.default.removeItem(atPath: path)
  }

  /// `withUnsafeBytes` for a body with typed throws (the standard one only rethrows `any Error`).
  static func withBytes<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(CheckpointRegistryError) -> R)
    throws(CheckpointRegistryError) -> R
  {
    let result: Result<R, CheckpointRegistryError> = bytes.withUnsafeBytes { buffer in
      do throws(CheckpointRegistryError) { return .success(try body(buffer)) } catch { return .failure(error) }
    }
    return try result.get()
  }

  /// `withUnsafeMutableBytes` for a body with typed throws.
  static func withMutableBytes<R>(
    _ bytes: inout [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(CheckpointRegistryError) -> R
  ) throws(CheckpointRegistryError) -> R {
    let result: Result<R, CheckpointRegistryError> = bytes.withUnsafeMutableBytes { buffer in
      do throws(CheckpointRegistryError) { return .success(try body(buffer)) } catch { return .failure(error) }
    }
    return try result.get()
  }

  /// Reads a whole small file; larger than `limit` bytes is an error.
  static func readSmallFile(_ path: String, limit: Int) throws(CheckpointRegistryError) -> Data {
    let fd = try openForReading(path)
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: limit + 1)
    let count = try withMutableBytes(&bytes) { (buffer) throws(CheckpointRegistryError) -> Int in
      try readFully(fd, into: buffer, path: path)
    }
    guard count <= limit else {
      throw .io(operation: "read", path: path, detail: "file is larger than \(limit) bytes")
    }
    return Data(bytes[0..<count])
  }

  /// The size of a regular file (following no link).
  static func fileSize(_ path: String) throws(CheckpointRegistryError) -> UInt64 {
    var info = stat()
    guard lstat(path, &info) == 0 else { throw error("stat", path, errno) }
    return UInt64(info.st_size)
  }

  /// Names in a folder, without "." and "..".
  static func contents(_ path: String) throws(CheckpointRegistryError) -> [String] {
    do {
      return try FileManager.default.contentsOfDirectory(atPath: path)
    } catch {
      throw .io(operation: "list folder", path: path, detail: "\(error)")
    }
  }
}

/// `rename(2)`, reachable from inside `RegistryFS` whose own `rename` shadows it.
private func posixRename(_ source: String, _ destination: String) -> Int32 {
  rename(source, destination)
}
