import AlignServing
import Testing

@Suite("Safety rules")
struct SafetyRulesTests {
  @Test("Luhn accepts valid numbers and rejects one changed digit")
  func luhn() {
    for valid in ["4111111111111111", "5500000000000004", "378282246310005", "4012888888881881", "0", "18"] {
      #expect(PIIScanner.luhnValid(valid), "\(valid)")
    }
    for invalid in ["4111111111111112", "5500000000000005", "378282246310006", "1", "", "41111x1111111111"] {
      #expect(!PIIScanner.luhnValid(invalid), "\(invalid)")
    }
  }

  static func kinds(_ text: String) -> [String] { PIIScanner.scan(text).map(\.kind) }

  static func matched(_ text: String) -> [String] {
    let bytes = Array(text.utf8)
    return PIIScanner.scan(text).map { String(decoding: bytes[$0.range], as: UTF8.self) }
  }

  @Test(
    "e-mail addresses",
    arguments: [
      ("mail a@example.com now", "a@example.com"),
      ("<jane.doe+tag@mail.example.co.uk>", "jane.doe+tag@mail.example.co.uk"),
      ("X_Y%Z-1@sub-domain.example.org.", "X_Y%Z-1@sub-domain.example.org"),
      ("(first.last@example.io)", "first.last@example.io"),
    ])
  func emails(_ text: String, _ expected: String) {
    #expect(Self.matched(text) == [expected])
    #expect(Self.kinds(text) == ["email"])
  }

  @Test(
    "near-miss e-mail forms do not match",
    arguments: [
      "user@localhost", "@mention", "a@b.c", "name at example dot com", "x@-bad.com", "x@bad-.com",
      "x@example.c0m", "foo@.com", ".@example.com", "me@example", "price 5@3.50",
    ])
  func emailNearMisses(_ text: String) {
    #expect(!Self.kinds(text).contains("email"), "\(text)")
  }

  @Test(
    "phone numbers",
    arguments: [
      ("call (415) 555-2671", "(415) 555-2671"),
      ("415-555-2671", "415-555-2671"),
      ("415.555.2671.", "415.555.2671"),
      ("415 555 2671", "415 555 2671"),
      ("1-800-555-0199", "1-800-555-0199"),
      ("+1 (212) 555-0123", "+1 (212) 555-0123"),
      ("+1 212 555 0123", "+1 212 555 0123"),
      ("+12125550123", "+12125550123"),
      ("+44 20 7946 0958", "+44 20 7946 0958"),
      ("+49 30 12345678", "+49 30 12345678"),
      ("+33 6 12 34 56 78", "+33 6 12 34 56 78"),
      ("020 7946 0958", "020 7946 0958"),
      ("06 12 34 56 78", "06 12 34 56 78"),
      ("030-12345678", "030-12345678"),
      ("on 2024-01-15 call 020 7946 0958", "020 7946 0958"),
      ("2024-01-15 415-555-2671", "415-555-2671"),
    ])
  func phones(_ text: String, _ expected: String) {
    #expect(Self.matched(text) == [expected], "\(text)")
    #expect(Self.kinds(text) == ["phone"], "\(text)")
  }

  @Test(
    "near-miss phone forms do not match",
    arguments: [
      "555-1234", "2024-01-15", "10:30", "192.168.1.1", "1.2.3.4.5", "v1.2.3", "1,000,000",
      "(415 555-2671", "415) 555-2671", "115-555-2671", "415-155-2671", "+1 555", "+0 123 456 789",
      "order 4155552671", "3.14159 2.71828", "978-3-16-148410-0", "ab415-555-2671", "415-555-2671x",
      "00 12 34 56 78", "2024-01-15 100 200", "020 7946-0958",
    ])
  func phoneNearMisses(_ text: String) {
    #expect(!Self.kinds(text).contains("phone"), "\(text)")
  }

  @Test(
    "payment card numbers (Luhn-valid, 13–19 digits)",
    arguments: [
      ("4111 1111 1111 1111", "4111 1111 1111 1111"),
      ("card 4111-1111-1111-1111.", "4111-1111-1111-1111"),
      ("4111111111111111", "4111111111111111"),
      ("3782 822463 10005", "3782 822463 10005"),
      ("4222222222222", "4222222222222"),
      ("6011 0009 9013 9424", "6011 0009 9013 9424"),
      ("4111 1111 1111 1111 003", "4111 1111 1111 1111 003"),
    ])
  func cards(_ text: String, _ expected: String) {
    #expect(Self.matched(text) == [expected], "\(text)")
    #expect(Self.kinds(text) == ["card"], "\(text)")
  }

  @Test(
    "near-miss card numbers do not match",
    arguments: [
      "4111 1111 1111 1112", "4111111111111112", "4111-1111 1111-1111", "411 11 11 11 11 11 11 1",
      "41111111111", "41111111111111111111", "4111.1111.1111.1111", "x4111111111111111",
    ])
  func cardNearMisses(_ text: String) {
    #expect(!Self.kinds(text).contains("card"), "\(text)")
  }

  @Test(
    "national ids",
    arguments: [
      ("SSN 123-45-6789", "123-45-6789", "us_ssn"),
      ("078 05 1120", "078 05 1120", "us_ssn"),
      ("NI JG 10 37 26 A", "JG 10 37 26 A", "uk_nino"),
      ("ab123456c", "ab123456c", "uk_nino"),
      ("DNI 12345678Z", "12345678Z", "es_dni"),
      ("00000000-T", "00000000-T", "es_dni"),
    ])
  func nationalIDs(_ text: String, _ expected: String, _ kind: String) {
    #expect(Self.matched(text) == [expected], "\(text)")
    #expect(Self.kinds(text) == [kind], "\(text)")
    #expect(PIIScanner.scan(text).allSatisfy { $0.category == .piiNationalID })
  }

  @Test(
    "near-miss national ids do not match",
    arguments: [
      "000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000", "123-45 6789",
      "123456789", "12-345-6789", "DQ 12 34 56 C", "QQ 12 34 56 C", "AO123456C", "GB123456A", "AB123456E", "AB 123456 C",
      "AB12 34 56C", "12345678A", "123456789Z", "X12345678Z",
    ])
  func nationalIDNearMisses(_ text: String) {
    #expect(!PIIScanner.scan(text).contains { $0.category == .piiNationalID }, "\(text)")
  }

  @Test("several kinds in one text, in order")
  func mixed() {
    let text = "Mail bob@example.com, call 415-555-2671, card 4111 1111 1111 1111, SSN 123-45-6789."
    #expect(Self.kinds(text) == ["email", "phone", "card", "us_ssn"])
    #expect(PIIScanner.scan("").isEmpty)
    #expect(PIIScanner.scan("日本語のテキスト 😀").isEmpty)
  }

  @Test("scanning stays linear on long adversarial texts")
  func linear() {
    let texts = [
      String(repeating: "1 ", count: 100_000),
      String(repeating: "12-", count: 70_000),
      String(repeating: "a.", count: 100_000) + "@",
      String(repeating: "x@", count: 100_000),
      String(repeating: "AB 12 34 ", count: 20_000),
    ]
    let clock = ContinuousClock()
    for text in texts {
      let elapsed = clock.measure { _ = PIIScanner.scan(text) }
      #expect(elapsed < .seconds(5), "\(text.prefix(12))…: \(elapsed)")
    }
  }

  @Test("term lists match case-insensitively on word boundaries")
  func terms() {
    let matcher = TermMatcher([["acme corp", "globex"], ["c++", "straße"], ["über"]])
    #expect(matcher.matchingLists(in: "Buy from ACME   Corp!") == [0])
    #expect(matcher.matchingLists(in: "globex.") == [0])
    #expect(matcher.matchingLists(in: "Globexpress") == [])
    #expect(matcher.matchingLists(in: "acme corporation") == [])
    #expect(matcher.matchingLists(in: "I write C++ daily") == [1])
    #expect(matcher.matchingLists(in: "abc++") == [])
    #expect(matcher.matchingLists(in: "Die STRASSE") == [])  // lowercasing, not case folding
    #expect(matcher.matchingLists(in: "die Straße und Über") == [1, 2])
    #expect(matcher.matchingLists(in: "überall") == [])
    #expect(matcher.matchingLists(in: "") == [])
    #expect(TermMatcher([]).matchingLists(in: "anything") == [])
  }

  @Test("the rules backend scores 1 for each category it finds and covers its lists")
  func rulesBackend() async throws {
    let backend = RulesBackend(termLists: [TermList(name: "w", action: .flag, terms: ["secret"])])
    #expect(backend.categories == SafetyCategory.pii + [.terms("w")])
    let profile = SafetyProfile(name: "p", rules: [:])
    let scores = try await backend.scores(
      [SafetyInput(text: "the SECRET is at a@example.com"), SafetyInput(text: "nothing here")], profile: profile)
    #expect(scores[0] == [.terms("w"): 1, .piiEmail: 1])
    #expect(scores[1] == [:])
  }
}
