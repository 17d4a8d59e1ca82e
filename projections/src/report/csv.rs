//! CSV as RFC 4180 has it: fields separated by commas, records ended by CRLF, a field
//! quoted when it holds a comma, a quote, CR or LF, and quotes inside doubled.
//!
//! Text that came from people (names) is also guarded against spreadsheet formula
//! injection: a text field starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`,
//! so a spreadsheet shows it instead of evaluating it. Numbers are written as they are.

/// One field of a record.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    /// Free text, possibly from a person: quoted as needed and guarded against formulas.
    Text(&'a str),
    /// A value we produced (an id, an amount, a code): quoted as needed, never altered.
    Plain(&'a str),
}

/// Writes CSV records into a string.
#[derive(Debug, Default)]
pub struct CsvWriter {
    out: String,
}

impl CsvWriter {
    pub fn new() -> CsvWriter {
        CsvWriter::default()
    }

    /// Writes a header or data record.
    pub fn record(&mut self, fields: &[Field<'_>]) {
        for (index, field) in fields.iter().enumerate() {
            if index > 0 {
                self.out.push(',');
            }
            match field {
                Field::Text(text) => {
                    let guarded = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
                    self.quoted(text, guarded);
                }
                Field::Plain(text) => self.quoted(text, false),
            }
        }
        self.out.push_str("\r\n");
    }

    /// Writes a record of plain fields.
    pub fn plain(&mut self, fields: &[&str]) {
        let fields: Vec<Field<'_>> = fields.iter().map(|field| Field::Plain(field)).collect();
        self.record(&fields);
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn quoted(&mut self, text: &str, guarded: bool) {
        let needs_quotes = guarded || text.contains([',', '"', '\r', '\n']);
        if !needs_quotes {
            self.out.push_str(text);
            return;
        }
        self.out.push('"');
        if guarded {
            self.out.push('\'');
        }
        for c in text.chars() {
            if c == '"' {
                self.out.push('"');
            }
            self.out.push(c);
        }
        self.out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_quoting() {
        let mut csv = CsvWriter::new();
        csv.plain(&["id", "name"]);
        csv.record(&[Field::Plain("a,b"), Field::Text("say \"hi\"\r\nbye")]);
        csv.record(&[Field::Plain("-5.00"), Field::Text("=SUM(A1)")]);
        assert_eq!(
            csv.finish(),
            "id,name\r\n\"a,b\",\"say \"\"hi\"\"\r\nbye\"\r\n-5.00,\"'=SUM(A1)\"\r\n"
        );
    }
}
