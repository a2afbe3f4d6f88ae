//! The built-in detectors, opt-in by name (`privacy.redact_builtin`):
//! e-mail addresses, payment card numbers (Luhn-checked), phone numbers
//! written as phone numbers, and the shapes of common API keys and bearer
//! tokens.
//!
//! Each is a pattern, a fixed replacement and, for cards and phones, a check
//! on the match that keeps look-alikes (an order id, a date, an IP address).

/// One built-in detector.
#[derive(Debug, Clone, Copy)]
pub struct Detector {
    pub name: &'static str,
    pub pattern: &'static str,
    pub replacement: &'static str,
    /// A match is redacted only when this accepts it.
    pub check: Option<fn(&str) -> bool>,
}

/// Every built-in detector, by name.
pub const ALL: [Detector; 4] = [
    Detector {
        name: "email",
        pattern: r"(?i)\b[a-z0-9._%+-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.[a-z]{2,24}\b",
        replacement: "[REDACTED:email]",
        check: None,
    },
    Detector {
        name: "card",
        pattern: r"\b\d(?:[ -]?\d){12,18}\b",
        replacement: "[REDACTED:card]",
        check: Some(is_card),
    },
    Detector {
        name: "phone",
        pattern: r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}|(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4})\b",
        replacement: "[REDACTED:phone]",
        check: Some(is_phone),
    },
    Detector {
        name: "api_key",
        pattern: concat!(
            r"\bsk-[A-Za-z0-9_-]{20,}",
            r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            r"|\bgh[pousr]_[A-Za-z0-9]{30,}",
            r"|\bgithub_pat_[A-Za-z0-9_]{20,}",
            r"|\bxox[abposr]-[A-Za-z0-9-]{10,}",
            r"|\bdapi[0-9a-f]{32}(?:-\d+)?\b",
            r"|(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{16,}",
        ),
        replacement: "[REDACTED:api_key]",
        check: None,
    },
];

/// The detector called `name`.
pub fn by_name(name: &str) -> Option<&'static Detector> {
    ALL.iter().find(|d| d.name == name)
}

/// The names, for error messages.
pub fn names() -> String {
    ALL.map(|d| d.name).join(", ")
}

/// 13 to 19 digits passing the Luhn check.
pub fn is_card(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    (13..=19).contains(&digits.len()) && luhn(&digits)
}

/// The Luhn checksum of `digits` (most significant first) is valid.
pub fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match i % 2 {
            1 if d * 2 > 9 => d * 2 - 9,
            1 => d * 2,
            _ => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// 10 to 15 digits (8 to 15 after a `+`): a phone number's length.
pub fn is_phone(s: &str) -> bool {
    let n = s.chars().filter(char::is_ascii_digit).count();
    match s.starts_with('+') {
        true => (8..=15).contains(&n),
        false => (10..=15).contains(&n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::redact::Redactor;

    fn only(name: &str) -> Redactor {
        Redactor::new(&[name.to_string()], &[]).unwrap()
    }

    fn redacted(name: &str, text: &str) -> String {
        only(name)
            .redact_str(text)
            .unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn emails_are_found_and_look_alikes_kept() {
        let r = |t: &str| redacted("email", t);
        assert_eq!(
            r("write to alice.b+x@mail.example.co.uk now"),
            "write to [REDACTED:email] now"
        );
        assert_eq!(r("ALICE@EXAMPLE.COM"), "[REDACTED:email]");
        for kept in ["@alice said hi", "user@localhost", "a@b", "x @ y.com"] {
            assert_eq!(r(kept), kept);
        }
    }

    #[test]
    fn cards_must_pass_luhn() {
        let r = |t: &str| redacted("card", t);
        assert_eq!(r("card 4111 1111 1111 1111 ok"), "card [REDACTED:card] ok");
        assert_eq!(r("4012-8888-8888-1881"), "[REDACTED:card]");
        assert_eq!(r("amex 378282246310005."), "amex [REDACTED:card].");
        // Same shape, failing Luhn: an order number is not a card.
        assert_eq!(r("order 4111 1111 1111 1112"), "order 4111 1111 1111 1112");
        assert_eq!(r("order id 1234567890123"), "order id 1234567890123");
        // Too short to be a card.
        assert_eq!(r("ref 424242424242"), "ref 424242424242");
    }

    #[test]
    fn luhn_checksum() {
        assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
    }

    #[test]
    fn phones_need_a_phone_shape() {
        let r = |t: &str| redacted("phone", t);
        assert_eq!(r("call +1 415 555 2671 now"), "call [REDACTED:phone] now");
        assert_eq!(r("(415) 555-2671"), "[REDACTED:phone]");
        assert_eq!(r("415.555.2671"), "[REDACTED:phone]");
        assert_eq!(r("+44 20 7946 0958"), "[REDACTED:phone]");
        assert_eq!(r("+4915112345678"), "[REDACTED:phone]");
        for kept in [
            "order 1234567890",
            "on 2024-01-15",
            "host 192.168.100.200",
            "version 1.2.3",
            "ticket 555-1234",
        ] {
            assert_eq!(r(kept), kept, "{kept}");
        }
    }

    #[test]
    fn api_key_shapes() {
        let r = |t: &str| redacted("api_key", t);
        let keys = [
            "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz_0123",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "xoxb-123456789012-abcdefghij",
            "dapi0123456789abcdef0123456789abcdef",
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc",
        ];
        for k in keys {
            assert_eq!(r(&format!("key={k};")), "key=[REDACTED:api_key];", "{k}");
        }
        for kept in [
            "the risk-based approach to sk-learn",
            "task-management-system-for-all-of-us",
            "AKIA is a prefix",
            "bearer of bad news",
        ] {
            assert_eq!(r(kept), kept, "{kept}");
        }
    }
}
