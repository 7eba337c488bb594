import Foundation

/// Reads a child process's pipe to its end with blocking reads on a thread of its own.
///
/// Foundation's `readabilityHandler` on Linux sometimes never reports the end of a pipe
/// (swift-corelibs-foundation#3275); a test waiting for that end then waits forever. A plain
/// `read(2)` loop always sees it: 0 bytes once every writer has closed.
public enum PipeReader {
  /// Calls `onData` with each chunk as it arrives and `onEnd` once, at the end of the pipe (or
  /// on a read error). Returns at once; the reading happens on a new thread named `name`.
  public static func readToEnd(
    _ handle: FileHandle, name: String = "test-pipe-reader", onData: @escaping @Sendable (Data) -> Void,
    onEnd: @escaping @Sendable () -> Void = {}
  ) {
    let thread = Thread {
      let fd = handle.fileDescriptor
      var chunk = [UInt8](repeating: 0, count: 1 << 16)
      while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
          onData(Data(chunk[0..<n]))
        } else if n < 0 && errno == EINTR {
          continue
        } else {
          break
        }
      }
      onEnd()
    }
    thread.name = name
    thread.start()
  }
}
