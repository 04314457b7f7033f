//! Masking of card/account numbers and phone numbers. Every log line and staff-facing output
//! goes through these; full numbers are never stored for accounts (only the masked form).

/// Digits an account number may have (bank cards have 12–19; accounts up to 32).
const ACCOUNT_DIGITS: std::ops::RangeInclusive<usize> = 4..=32;

/// Whether `account` is already in the form [`mask_account`] produces: at most the first and
/// last four digits visible, the rest `*`. Anything else with a `*` in it is not a mask.
pub fn is_masked_account(account: &str) -> bool {
    let t = account.trim();
    let long = t.len() == 19 && {
        let b = t.as_bytes();
        b[..4].iter().all(u8::is_ascii_digit)
            && &t[4..15] == " **** **** "
            && b[15..].iter().all(u8::is_ascii_digit)
    };
    let short = {
        let stars = t.chars().take_while(|c| *c == '*').count();
        let rest = &t[stars..];
        stars > 0 && rest.len() <= 4 && rest.chars().all(|c| c.is_ascii_digit())
    };
    long || short
}

/// An account number as an import or a person gives it: digits (spaces allowed between
/// them), or a number already masked by [`mask_account`]. The message never repeats the
/// number.
/// A channel agreement (mandate) id: 1 to 64 printable ASCII characters without spaces,
/// which every channel's protocol carries as is.
pub fn check_agreement(agreement: &str) -> Result<(), String> {
    let n = agreement.chars().count();
    if agreement.trim().is_empty() {
        return Err("is empty".into());
    }
    if n > 64 {
        return Err(format!(
            "has {n} characters; an agreement id has at most 64"
        ));
    }
    match agreement.chars().find(|c| !c.is_ascii_graphic()) {
        Some(c) => Err(format!(
            "contains {c:?}; an agreement id is printable ASCII without spaces"
        )),
        None => Ok(()),
    }
}

pub fn check_account(account: &str) -> Result<(), String> {
    if is_masked_account(account) {
        return Ok(());
    }
    let t = account.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    if !t.chars().all(|c| c.is_ascii_digit() || c == ' ') {
        return Err(
            "must be digits (spaces allowed), or already masked like 6222 **** **** 1234".into(),
        );
    }
    let digits = t.chars().filter(char::is_ascii_digit).count();
    if !ACCOUNT_DIGITS.contains(&digits) {
        return Err(format!(
            "has {digits} digits; an account number has {} to {}",
            ACCOUNT_DIGITS.start(),
            ACCOUNT_DIGITS.end()
        ));
    }
    Ok(())
}

/// `6222021234561234` → `6222 **** **** 1234`. Short values keep at most their last four
/// characters visible. A value already in masked form is kept; any other value with a `*`
/// (not a mask, but possibly a full number) is masked like the rest.
pub fn mask_account(account: &str) -> String {
    if is_masked_account(account) {
        return account.trim().to_string();
    }
    let chars: Vec<char> = account
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '*')
        .collect();
    let n = chars.len();
    if n <= 4 {
        return "*".repeat(n);
    }
    let last: String = chars[n - 4..].iter().collect();
    if n < 12 {
        return format!("{}{last}", "*".repeat(n - 4));
    }
    let first: String = chars[..4].iter().collect();
    format!("{first} **** **** {last}")
}

/// `13812345678` → `138****5678`; other lengths keep the last four digits only.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    let n = chars.len();
    if chars.contains(&'*') {
        return phone.to_string();
    }
    if n == 11 {
        let a: String = chars[..3].iter().collect();
        let b: String = chars[7..].iter().collect();
        return format!("{a}****{b}");
    }
    if n <= 4 {
        return "*".repeat(n);
    }
    let last: String = chars[n - 4..].iter().collect();
    format!("{}{last}", "*".repeat(n - 4))
}

/// `alice@example.com` → `a***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((user, domain)) => {
            let first: String = user.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn agreement_ids_are_printable_and_bounded() {
        assert!(check_agreement("AGR-C1_2027/01").is_ok());
        assert!(check_agreement("").unwrap_err().contains("empty"));
        assert!(check_agreement("AGR 1").unwrap_err().contains("' '"));
        assert!(check_agreement("AGR\u{0}").is_err());
        assert!(check_agreement("协议1").is_err());
        assert!(check_agreement(&"A".repeat(65)).unwrap_err().contains("65"));
    }

    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask_account("6222021234561234"), "6222 **** **** 1234");
        assert_eq!(mask_account("6222 **** **** 1234"), "6222 **** **** 1234");
        assert_eq!(mask_account("12345678"), "****5678");
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("+1 212 555 0100"), "***********0100");
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
    }

    #[test]
    fn a_star_does_not_make_a_number_masked() {
        // Before: anything with a `*` was stored as given, full digits and all.
        assert_eq!(mask_account("6222021234567*890"), "6222 **** **** 7890");
        assert_eq!(mask_account("*6222021234567890"), "6222 **** **** 7890");
        assert_eq!(mask_account("****5678"), "****5678");
        assert!(check_account("6222021234567*890").is_err());
        assert!(check_account("6222 **** **** 1234").is_ok());
        assert!(check_account("6222 0212 3456 7890").is_ok());
        assert!(check_account("62-22").is_err());
        let e = check_account("62220212345678901234567890123456789").unwrap_err();
        assert!(
            !e.contains("6222"),
            "the message never echoes the number: {e}"
        );
    }
}
