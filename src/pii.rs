//! Masking of card/account numbers and phone numbers. Every log line and staff-facing output
//! goes through these; full numbers are never stored for accounts (only the masked form).

/// `6222021234561234` → `6222 **** **** 1234`. Short or already-masked values keep at most
/// their last four characters visible.
pub fn mask_account(account: &str) -> String {
    let chars: Vec<char> = account.chars().filter(|c| !c.is_whitespace()).collect();
    if chars.contains(&'*') {
        return account.to_string();
    }
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
}
