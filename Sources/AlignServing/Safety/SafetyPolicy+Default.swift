extension SafetyPolicy {
  /// The text of `Config/safety-policy.json`; a test checks that the two stay equal.
  static let builtInDefaultJSON = #"""
{
  "format": "alignd.safety-policy",
  "format_version": 1,
  "name": "default",
  "version": "2",
  "backends": ["classifier", "rules", "guard"],
  "default_profile": "default",
  "profiles": {
    "default": {
      "categories": {
        "harassment": { "threshold": 0.306, "action": "flag" },
        "harassment/threatening": { "threshold": 0.5669, "action": "block" },
        "hate": { "threshold": 0.5689, "action": "block" },
        "hate/threatening": { "threshold": 0.4133, "action": "block" },
        "illicit": { "threshold": 0.6725, "action": "flag" },
        "illicit/violent": { "threshold": 0.748, "action": "block" },
        "self-harm": { "threshold": 0.4309, "action": "flag" },
        "self-harm/intent": { "threshold": 0.6233, "action": "flag" },
        "self-harm/instructions": { "threshold": 0.5708, "action": "block" },
        "sexual": { "threshold": 0.7207, "action": "flag" },
        "sexual/minors": { "threshold": 0.3, "action": "block" },
        "violence": { "threshold": 0.5163, "action": "flag" },
        "violence/graphic": { "threshold": 0.5, "action": "flag" },
        "pii/email": { "threshold": 0.5, "action": "flag" },
        "pii/phone": { "threshold": 0.5, "action": "flag" },
        "pii/credit_card": { "threshold": 0.5, "action": "block" },
        "pii/national_id": { "threshold": 0.5, "action": "block" },
        "guard/specialized_advice": { "threshold": 0.5, "action": "flag" },
        "guard/privacy": { "threshold": 0.5, "action": "flag" },
        "guard/intellectual_property": { "threshold": 0.5, "action": "flag" },
        "guard/elections": { "threshold": 0.5, "action": "flag" },
        "guard/code_interpreter_abuse": { "threshold": 0.5, "action": "block" },
        "guard/unspecified": { "threshold": 0.5, "action": "flag" }
      }
    },
    "strict": {
      "extends": "default",
      "categories": {
        "harassment": { "threshold": 0.3, "action": "block" },
        "illicit": { "threshold": 0.3, "action": "block" },
        "self-harm": { "threshold": 0.3, "action": "block" },
        "self-harm/intent": { "threshold": 0.3, "action": "block" },
        "sexual": { "threshold": 0.3, "action": "block" },
        "violence": { "threshold": 0.3, "action": "block" },
        "violence/graphic": { "threshold": 0.3, "action": "block" },
        "pii/email": { "threshold": 0.5, "action": "block" },
        "pii/phone": { "threshold": 0.5, "action": "block" },
        "guard/unspecified": { "threshold": 0.5, "action": "block" }
      }
    },
    "permissive": {
      "categories": {
        "harassment": { "threshold": 0.9, "action": "flag" },
        "illicit/violent": { "threshold": 0.5, "action": "block" },
        "sexual/minors": { "threshold": 0.3, "action": "block" },
        "self-harm/instructions": { "threshold": 0.5, "action": "block" },
        "pii/credit_card": { "threshold": 0.5, "action": "flag" },
        "pii/national_id": { "threshold": 0.5, "action": "flag" }
      }
    }
  },
  "term_lists": {}
}
"""#
}
