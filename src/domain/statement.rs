//! The daily statement (对账文件) as channels send it: CSV
//! `order_no,channel_ref,amount,fee,status,at` with an `END,<count>` trailer (or the older
//! format without fees and trailer). Parsing is pure and strict: every problem names its line
//! and column, and amounts go through `money::parse_money`, so nothing out of bounds gets in.

use super::channel::{OrderNoRule, StatementLine};
use super::money::parse_money;
use chrono::{DateTime, Utc};

pub const STATEMENT_HEADER: &str = "order_no,channel_ref,amount,fee,status,at";
/// The first statement format, without fees and without a trailer.
pub const STATEMENT_HEADER_V1: &str = "order_no,channel_ref,amount,status,at";
/// The last line of a statement: `END,<number of lines>`, so a truncated file is refused.
pub const STATEMENT_TRAILER: &str = "END";

/// A statement import error, pointing at the 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct StatementError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The statement's layout, told apart by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementFormat {
    /// `order_no,channel_ref,amount,status,at`: no fees (read as 0), no trailer.
    V1,
    /// `order_no,channel_ref,amount,fee,status,at`, then the trailer `END,<line count>`.
    V2,
}

impl StatementFormat {
    fn of_header(names: &str) -> Option<Self> {
        match names {
            STATEMENT_HEADER => Some(StatementFormat::V2),
            STATEMENT_HEADER_V1 => Some(StatementFormat::V1),
            _ => None,
        }
    }

    fn columns(self) -> &'static str {
        match self {
            StatementFormat::V1 => STATEMENT_HEADER_V1,
            StatementFormat::V2 => STATEMENT_HEADER,
        }
    }
}

/// The statement as CSV (format 2): [`STATEMENT_HEADER`], one row per line with `at` in
/// RFC 3339, then `END,<count>`. Fields with commas, quotes or line breaks are quoted, so any
/// line round-trips.
pub fn statement_csv(lines: &[StatementLine]) -> String {
    let mut out = format!("{STATEMENT_HEADER}\n");
    for l in lines {
        let at = l.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let (amount, fee) = (l.amount.to_string(), l.fee.to_string());
        let fields = [&l.order_no, &l.channel_ref, &amount, &fee, &l.status, &at];
        let row: Vec<String> = fields.iter().map(|f| quote(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out.push_str(&format!("{STATEMENT_TRAILER},{}\n", lines.len()));
    out
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) || field == STATEMENT_TRAILER {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Parse a statement without checking order numbers; see [`parse_statement`].
pub fn parse_statement_csv(text: &str) -> Result<Vec<StatementLine>, StatementError> {
    parse_statement(text, None)
}

/// Parse a statement. Strict, because a silently misread statement line would mismatch
/// reconciliation: a wrong header, a short or long row, a bad amount, fee, status or time, an
/// order number off the channel's `rule`, a repeated order number, or a truncated file (no
/// final line break, no trailer or a wrong count in format 2) is an error naming its line and
/// column, and nothing of the file is used.
pub fn parse_statement(
    text: &str,
    rule: Option<&OrderNoRule>,
) -> Result<Vec<StatementLine>, StatementError> {
    let (mut rows, end) = csv_rows(text)?;
    if rows.is_empty() {
        return Err(error_at(1, 1, "empty statement, no header"));
    }
    let header = rows.remove(0);
    let names: Vec<&str> = header.fields.iter().map(|f| f.text.as_str()).collect();
    let format = StatementFormat::of_header(&names.join(",")).ok_or_else(|| {
        error_at(
            1,
            1,
            &format!("header must be `{STATEMENT_HEADER}` (or `{STATEMENT_HEADER_V1}`)"),
        )
    })?;
    if !text.ends_with(['\n', '\r']) {
        return Err(error_at(
            end.0,
            end.1,
            "no line break at the end: the file is truncated",
        ));
    }
    if format == StatementFormat::V2 {
        check_trailer(&mut rows, end)?;
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let line = statement_line(row, format, rule)?;
        if !seen.insert(line.order_no.clone()) {
            let f = &row.fields[0];
            return Err(field_error(
                f,
                &format!("order number {} repeated", line.order_no),
            ));
        }
        out.push(line);
    }
    Ok(out)
}

/// Take format 2's `END,<count>` row off the end, checking it is there and counts the rows.
fn check_trailer(rows: &mut Vec<Row>, end: (usize, usize)) -> Result<(), StatementError> {
    let is_trailer = |r: &Row| {
        r.fields.len() == 2 && r.fields[0].text == STATEMENT_TRAILER && !r.fields[0].quoted
    };
    if let Some(pos) = rows.iter().position(is_trailer) {
        if pos + 1 != rows.len() {
            let f = &rows[pos + 1].fields[0];
            return Err(field_error(f, "line after the END trailer"));
        }
    }
    match rows.pop() {
        Some(r) if is_trailer(&r) => {
            let count = &r.fields[1];
            match count.text.parse::<usize>() {
                Ok(n) if n == rows.len() => Ok(()),
                _ => Err(field_error(
                    count,
                    &format!(
                        "trailer counts `{}` lines, the file has {}: truncated or padded",
                        count.text,
                        rows.len()
                    ),
                )),
            }
        }
        Some(r) => {
            rows.push(r);
            Err(error_at(
                end.0,
                end.1,
                "no END trailer: the file is truncated",
            ))
        }
        None => Err(error_at(
            end.0,
            end.1,
            "no END trailer: the file is truncated",
        )),
    }
}

fn error_at(line: usize, column: usize, message: &str) -> StatementError {
    StatementError {
        line,
        column,
        message: message.to_string(),
    }
}

/// One CSV field and where it starts.
#[derive(Debug)]
struct Field {
    text: String,
    quoted: bool,
    line: usize,
    column: usize,
}

/// One CSV row; `line` and `end_column` are just past its last character, where a missing
/// field would be.
#[derive(Debug)]
struct Row {
    fields: Vec<Field>,
    line: usize,
    end_column: usize,
}

fn statement_line(
    row: &Row,
    format: StatementFormat,
    rule: Option<&OrderNoRule>,
) -> Result<StatementLine, StatementError> {
    let columns = format.columns();
    let count = columns.split(',').count();
    if row.fields.len() < count {
        let message = format!(
            "row has {} fields, expected {count} ({columns})",
            row.fields.len()
        );
        return Err(error_at(row.line, row.end_column, &message));
    }
    if let Some(extra) = row.fields.get(count) {
        return Err(error_at(extra.line, extra.column, "unexpected extra field"));
    }
    let f = &row.fields;
    let order_no = non_empty(&f[0], "order_no")?;
    if let Some(rule) = rule {
        rule.check(&order_no)
            .map_err(|e| field_error(&f[0], &format!("order_no: {e}")))?;
    }
    let (fee, rest) = match format {
        StatementFormat::V1 => (rust_decimal::Decimal::ZERO, &f[3..]),
        StatementFormat::V2 => (money(&f[3], "fee")?, &f[4..]),
    };
    let amount = money(&f[2], "amount")?;
    if amount.is_zero() {
        return Err(field_error(&f[2], "amount: must be above 0"));
    }
    Ok(StatementLine {
        order_no,
        channel_ref: non_empty(&f[1], "channel_ref")?,
        amount,
        fee,
        status: status(&rest[0])?,
        at: timestamp(&rest[1])?,
    })
}

fn money(field: &Field, name: &str) -> Result<rust_decimal::Decimal, StatementError> {
    parse_money(&field.text).map_err(|e| field_error(field, &format!("{name}: {e}")))
}

fn field_error(field: &Field, message: &str) -> StatementError {
    error_at(field.line, field.column, message)
}

fn non_empty(field: &Field, name: &str) -> Result<String, StatementError> {
    if field.text.trim().is_empty() {
        return Err(field_error(field, &format!("{name} is empty")));
    }
    Ok(field.text.clone())
}

fn status(field: &Field) -> Result<String, StatementError> {
    match field.text.as_str() {
        "success" | "failed" => Ok(field.text.clone()),
        other => Err(field_error(
            field,
            &format!("status `{other}` is not `success` or `failed`"),
        )),
    }
}

fn timestamp(field: &Field) -> Result<DateTime<Utc>, StatementError> {
    DateTime::parse_from_rfc3339(&field.text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| field_error(field, &format!("`{}` is not an RFC 3339 time", field.text)))
}

/// Split CSV text into rows of fields (RFC 4180 quoting), remembering positions. Blank lines
/// are skipped; a line break ends a row unless it is inside quotes.
fn csv_rows(text: &str) -> Result<(Vec<Row>, (usize, usize)), StatementError> {
    let mut reader = CsvReader::default();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        reader.push(c, &mut chars)?;
    }
    reader.finish()
}

/// Character-at-a-time CSV state, tracking line and column for error messages.
struct CsvReader {
    rows: Vec<Row>,
    fields: Vec<Field>,
    text: String,
    field_start: (usize, usize),
    /// Position of the opening quote while inside a quoted field.
    open_quote: Option<(usize, usize)>,
    /// Whether the current field was quoted and is closed: only `,` or a line break may follow.
    closed: bool,
    line: usize,
    column: usize,
}

impl Default for CsvReader {
    fn default() -> Self {
        CsvReader {
            rows: Vec::new(),
            fields: Vec::new(),
            text: String::new(),
            field_start: (1, 1),
            open_quote: None,
            closed: false,
            line: 1,
            column: 1,
        }
    }
}

impl CsvReader {
    fn push(
        &mut self,
        c: char,
        rest: &mut std::iter::Peekable<std::str::Chars<'_>>,
    ) -> Result<(), StatementError> {
        if self.open_quote.is_some() {
            self.push_quoted(c, rest);
        } else {
            self.push_plain(c, rest)?;
        }
        Ok(())
    }

    fn push_quoted(&mut self, c: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) {
        match c {
            '"' if rest.peek() == Some(&'"') => {
                rest.next();
                self.text.push('"');
                self.column += 2;
            }
            '"' => {
                self.open_quote = None;
                self.closed = true;
                self.column += 1;
            }
            '\n' => {
                self.text.push(c);
                self.line += 1;
                self.column = 1;
            }
            _ => {
                self.text.push(c);
                self.column += 1;
            }
        }
    }

    fn push_plain(
        &mut self,
        c: char,
        rest: &mut std::iter::Peekable<std::str::Chars<'_>>,
    ) -> Result<(), StatementError> {
        match c {
            ',' => {
                self.end_field();
                self.column += 1;
                self.field_start = (self.line, self.column);
            }
            '\r' if rest.peek() == Some(&'\n') => self.column += 1,
            '\n' | '\r' => self.end_row(),
            _ if self.closed => {
                return Err(error_at(
                    self.line,
                    self.column,
                    "text after a closing quote",
                ));
            }
            '"' if self.text.is_empty() => {
                self.open_quote = Some((self.line, self.column));
                self.column += 1;
            }
            '"' => {
                return Err(error_at(
                    self.line,
                    self.column,
                    "quote inside an unquoted field",
                ))
            }
            _ => {
                self.text.push(c);
                self.column += 1;
            }
        }
        Ok(())
    }

    fn end_field(&mut self) {
        let (line, column) = self.field_start;
        self.fields.push(Field {
            text: std::mem::take(&mut self.text),
            quoted: self.closed,
            line,
            column,
        });
        self.closed = false;
    }

    fn end_row(&mut self) {
        let blank = self.fields.is_empty() && self.text.is_empty() && !self.closed;
        if !blank {
            self.end_field();
            self.rows.push(Row {
                fields: std::mem::take(&mut self.fields),
                line: self.line,
                end_column: self.column,
            });
        }
        self.line += 1;
        self.column = 1;
        self.field_start = (self.line, 1);
    }

    /// The rows and the position just past the last character.
    fn finish(mut self) -> Result<(Vec<Row>, (usize, usize)), StatementError> {
        if let Some((line, column)) = self.open_quote {
            return Err(error_at(line, column, "quoted field never closed"));
        }
        let end = (self.line, self.column);
        self.end_row();
        Ok((self.rows, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rust_decimal_macros::dec;

    fn line(no: &str, reference: &str, amount: rust_decimal::Decimal) -> StatementLine {
        StatementLine {
            order_no: no.into(),
            channel_ref: reference.into(),
            amount,
            fee: dec!(0.05),
            status: "success".into(),
            at: Utc.with_ymd_and_hms(2026, 12, 19, 2, 0, 0).unwrap(),
        }
    }

    #[test]
    fn statement_round_trips_even_with_odd_fields() {
        let lines = vec![
            line("WX001", "R-1", dec!(10.50)),
            line("WX002", "odd, \"ref\"\nline", dec!(0.01)),
            line("WX003", "END", dec!(1)),
        ];
        let text = statement_csv(&lines);
        assert!(text.starts_with(
            "order_no,channel_ref,amount,fee,status,at\nWX001,R-1,10.50,0.05,success,2026-12-19T02:00:00Z\n"
        ));
        assert!(text.ends_with("\nEND,3\n"));
        assert_eq!(parse_statement_csv(&text).unwrap(), lines);
        let crlf = text.replace('\n', "\r\n").replace("\r\nline", "\nline");
        assert_eq!(parse_statement_csv(&crlf).unwrap(), lines);
        assert_eq!(parse_statement_csv(&statement_csv(&[])).unwrap(), vec![]);
    }

    #[test]
    fn format_1_has_no_fees_and_no_trailer() {
        let text = format!("{STATEMENT_HEADER_V1}\nA1,R1,1.00,success,2026-12-19T02:00:00Z\n");
        let lines = parse_statement_csv(&text).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].amount, lines[0].fee), (dec!(1.00), dec!(0)));
        assert_eq!(
            parse_statement_csv(&format!("{STATEMENT_HEADER_V1}\n")).unwrap(),
            vec![]
        );
    }

    fn error_of(text: &str) -> (usize, usize, String) {
        let e = parse_statement_csv(text).unwrap_err();
        (e.line, e.column, e.message)
    }

    #[test]
    fn statement_errors_point_at_line_and_column() {
        let h = STATEMENT_HEADER;
        let ok = "A1,R1,1.00,0.01,success,2026-12-19T02:00:00Z";
        let t = "2026-12-19T02:00:00Z";
        assert_eq!(error_of("").0, 1);
        assert_eq!(error_of("order_no,ref,amount,status,at\n").0, 1);
        let cases = [
            (
                format!("{h}\n{ok}\nA2,R2,1.0x,0,success,{t}\nEND,2\n"),
                3,
                7,
            ),
            (format!("{h}\nA2,R2,-1,0,success,{t}\nEND,1\n"), 2, 7),
            (format!("{h}\nA2,R2,1.005,0,success,{t}\nEND,1\n"), 2, 7),
            (format!("{h}\nA2,R2,0,0,success,{t}\nEND,1\n"), 2, 7),
            (format!("{h}\nA2,R2,1.00,0.001,success,{t}\nEND,1\n"), 2, 12),
            (format!("{h}\n{ok}\nA2,R2,1.00\nEND,2\n"), 3, 11),
            (format!("{h}\nA2,R2,1.00,0,ok,{t}\nEND,1\n"), 2, 14),
            (
                format!("{h}\nA2,R2,1.00,0,failed,yesterday\nEND,1\n"),
                2,
                21,
            ),
            (format!("{h}\n{ok},extra\nEND,1\n"), 2, 46),
            (format!("{h}\n,R2,1.00,0,failed,{t}\nEND,1\n"), 2, 1),
            (format!("{h}\nA2,\"R2,1.00,failed\n"), 2, 4),
            (format!("{h}\nA2,R\"2,1.00\n"), 2, 5),
            (format!("{h}\nA2,\"R2\"x,1.00\n"), 2, 8),
            // Truncated: no final line break (short last row), no trailer, wrong count.
            (format!("{h}\n{ok}\nA2,R2,1.0"), 3, 10),
            (format!("{h}\n{ok}\n"), 3, 1),
            (format!("{h}\n{ok}\nEND,2\n"), 3, 5),
            (format!("{h}\n{ok}\nEND,1\n{ok}\nEND,2\n"), 4, 1),
            (format!("{h}\n{ok}\n{ok}\nEND,2\n"), 3, 1),
        ];
        for (text, line, column) in cases {
            let (l, c, m) = error_of(&text);
            assert_eq!((l, c), (line, column), "{text:?}: {m}");
        }
    }

    #[test]
    fn order_numbers_follow_the_channel_rule() {
        let rule = crate::domain::channel::builtin_channels()[0]
            .order_no
            .clone();
        let t = "2026-12-19T02:00:00Z";
        let good = format!("{STATEMENT_HEADER}\n800000000001,R1,1.00,0,success,{t}\nEND,1\n");
        assert_eq!(parse_statement(&good, Some(&rule)).unwrap().len(), 1);
        let bad = format!(
            "{STATEMENT_HEADER}\n800000000001,R1,1.00,0,success,{t}\n8000001,R2,1.00,0,success,{t}\nEND,2\n"
        );
        let e = parse_statement(&bad, Some(&rule)).unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.message.starts_with("order_no:"), "{e}");
        assert!(parse_statement(&bad, None).is_ok());
    }

    /// The tester's poison statement: the largest Decimal as an amount. It overflowed a
    /// multiplication (a panic on every daemon start); now the line is refused, located.
    #[test]
    fn an_amount_past_the_bound_is_a_located_error() {
        let t = "2026-12-19T02:00:00Z";
        for amount in ["79228162514264337593543950335", "1000000000000.01"] {
            let text =
                format!("{STATEMENT_HEADER}\n800000000001,R1,{amount},0,success,{t}\nEND,1\n");
            let e = parse_statement(&text, None).unwrap_err();
            assert_eq!((e.line, e.column), (2, 17), "{e}");
            assert!(
                e.message.starts_with("amount:") && e.message.contains("largest amount"),
                "{e}"
            );
        }
    }

    /// Property: random mutations of a valid statement never panic the parser, and whatever
    /// it accepts writes back to text that parses to the same lines.
    #[test]
    fn mutated_statements_never_panic() {
        let lines: Vec<StatementLine> = (0..5)
            .map(|i| line(&format!("WX{i}"), &format!("R{i}"), dec!(12.34)))
            .collect();
        let good: Vec<char> = statement_csv(&lines).chars().collect();
        let alphabet: Vec<char> = ",\"\r\n0123456789.-:TZENDaé ".chars().collect();
        let rule = crate::domain::channel::builtin_channels()[1]
            .order_no
            .clone();
        let mut rng = StdRng::seed_from_u64(42);
        let mut rejected = 0;
        for _ in 0..20_000 {
            let mut text = good.clone();
            for _ in 0..rng.gen_range(1..6) {
                mutate(&mut text, &alphabet, &mut rng);
            }
            let text: String = text.into_iter().collect();
            let _ = parse_statement(&text, Some(&rule));
            match parse_statement_csv(&text) {
                Ok(parsed) => assert_eq!(
                    parse_statement_csv(&statement_csv(&parsed)).unwrap(),
                    parsed
                ),
                Err(e) => {
                    assert!(e.line >= 1 && e.column >= 1, "{e}");
                    rejected += 1;
                }
            }
        }
        assert!(
            rejected > 10_000,
            "most mutations must be refused: {rejected}"
        );
    }

    fn mutate(text: &mut Vec<char>, alphabet: &[char], rng: &mut StdRng) {
        let pos = rng.gen_range(0..=text.len());
        let c = alphabet[rng.gen_range(0..alphabet.len())];
        match rng.gen_range(0..4) {
            0 => text.insert(pos, c),
            1 if pos < text.len() => {
                text.remove(pos);
            }
            2 if pos < text.len() => text[pos] = c,
            _ => text.truncate(pos),
        }
    }
}
