/// Scheduling priority; higher runs first.
public enum RequestPriority: Int, Sendable, Comparable, CaseIterable {
  case low = 0
  case normal = 1
  case high = 2

  public static func < (a: RequestPriority, b: RequestPriority) -> Bool { a.rawValue < b.rawValue }
}

/// A bounded priority queue with aging.
///
/// Order: effective priority, then arrival. A request's effective priority rises by one level for
/// every `agingInterval` it waits, so a low-priority request waits at most about
/// `2 × agingInterval` behind a steady stream of high-priority ones: starvation is bounded.
/// Time is passed in (`now`, seconds) so the queue is deterministic under test.
public struct RequestQueue<Element> {
  struct Entry {
    var element: Element
    var priority: RequestPriority
    var enqueuedAt: Double
    var order: UInt64
  }

  /// Most requests the queue holds; `enqueue` refuses beyond it.
  public let capacity: Int
  /// Seconds of waiting that raise a request by one priority level.
  public let agingInterval: Double

  private var entries: [Entry] = []
  private var nextOrder: UInt64 = 0

  public init(capacity: Int, agingInterval: Double = 2.0) {
    self.capacity = max(0, capacity)
    self.agingInterval = agingInterval
  }

  public var count: Int { entries.count }
  public var isEmpty: Bool { entries.isEmpty }
  public var isFull: Bool { entries.count >= capacity }

  /// Adds a request; false (and nothing added) when the queue is full.
  @discardableResult
  public mutating func enqueue(_ element: Element, priority: RequestPriority, now: Double) -> Bool {
    guard entries.count < capacity else { return false }
    entries.append(Entry(element: element, priority: priority, enqueuedAt: now, order: nextOrder))
    nextOrder += 1
    return true
  }

  /// Puts a request back at the front of its priority (after preemption), ignoring the bound.
  public mutating func prepend(_ element: Element, priority: RequestPriority, enqueuedAt: Double) {
    entries.append(Entry(element: element, priority: priority, enqueuedAt: enqueuedAt, order: 0))
  }

  func effectivePriority(_ entry: Entry, now: Double) -> Double {
    let waited = max(0, now - entry.enqueuedAt)
    let boost = agingInterval > 0 ? (waited / agingInterval).rounded(.down) : 0
    return Double(entry.priority.rawValue) + boost
  }

  private func bestIndex(now: Double) -> Int? {
    var best: Int? = nil
    var bestKey = (-Double.infinity, UInt64.max)
    for (index, entry) in entries.enumerated() {
      let key = (effectivePriority(entry, now: now), entry.order)
      if key.0 > bestKey.0 || (key.0 == bestKey.0 && key.1 < bestKey.1) {
        best = index
        bestKey = key
      }
    }
    return best
  }

  /// The request that would be dequeued next.
  public func peek(now: Double) -> Element? {
    bestIndex(now: now).map { entries[$0].element }
  }

  /// Removes and returns the next request.
  public mutating func dequeue(now: Double) -> Element? {
    guard let index = bestIndex(now: now) else { return nil }
    return entries.remove(at: index).element
  }

  /// Removes every request matching `predicate` (cancelled or expired ones) and returns them.
  public mutating func removeAll(where predicate: (Element) -> Bool) -> [Element] {
    var removed: [Element] = []
    entries.removeAll { entry in
      if predicate(entry.element) {
        removed.append(entry.element)
        return true
      }
      return false
    }
    return removed
  }

  /// Every queued element, in no particular order.
  public var elements: [Element] { entries.map(\.element) }
}
