//! Tokens of PTX source text: identifiers (which in PTX include directives such as `.reg`,
//! registers such as `%r1`, labels such as `$L__BB0_1` and dotted opcodes), numbers in PTX's
//! forms (`0f3F800000`, `0d…`, `0x…`, decimal, floats), strings and punctuation. Comments are
//! dropped; every token keeps its line for error messages.

use super::ParseError;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name: opcode (with its dotted modifiers), directive, register, label or symbol.
    Ident(String),
    /// An integer literal (two's complement bits; negative literals come as `Punct('-')`
    /// followed by the literal).
    Int(u64),
    /// `0f…` (f32 bits) or a decimal float literal taken as f32 where an f32 is expected.
    F32(u32),
    /// `0d…` (f64 bits) or a decimal float literal.
    F64(u64),
    /// A string literal (contents, unescaped).
    Str(String),
    /// One of `, ; : { } [ ] ( ) @ ! | + - < > =`.
    Punct(char),
}

/// A token and the 1-based source line it starts on.
#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || matches!(c, b'_' | b'$' | b'%' | b'.')
}

fn ident_cont(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.')
}

/// Splits `src` into tokens.
pub fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1u32;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_ascii_whitespace() || c == 0 => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let s = String::from_utf8_lossy(&b[start..i.min(b.len())]).into_owned();
                out.push(Token {
                    tok: Tok::Str(s),
                    line,
                });
                i += 1;
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    // An exponent's sign belongs to the number: 1e-5.
                    i += 1;
                    if i < b.len()
                        && matches!(b[i], b'+' | b'-')
                        && matches!(b[i - 1], b'e' | b'E')
                        && !b[start..i].starts_with(b"0x")
                        && !b[start..i].starts_with(b"0X")
                    {
                        i += 1;
                    }
                }
                let text = &src[start..i];
                out.push(Token {
                    tok: number(text).ok_or_else(|| ParseError {
                        line,
                        msg: format!("bad number `{text}`"),
                    })?,
                    line,
                });
            }
            c if ident_start(c) => {
                let start = i;
                i += 1;
                // `::` belongs to a name (`.shared::cta`); a single `:` ends a label.
                while i < b.len()
                    && (ident_cont(b[i]) || (b[i] == b':' && b.get(i + 1) == Some(&b':')))
                {
                    i += if b[i] == b':' { 2 } else { 1 };
                }
                out.push(Token {
                    tok: Tok::Ident(src[start..i].to_string()),
                    line,
                });
            }
            b',' | b';' | b':' | b'{' | b'}' | b'[' | b']' | b'(' | b')' | b'@' | b'!' | b'|'
            | b'+' | b'-' | b'<' | b'>' | b'=' => {
                out.push(Token {
                    tok: Tok::Punct(c as char),
                    line,
                });
                i += 1;
            }
            _ => {
                return Err(ParseError {
                    line,
                    msg: format!("unexpected character `{}`", c as char),
                });
            }
        }
    }
    Ok(out)
}

/// A numeric literal in one of PTX's forms.
fn number(t: &str) -> Option<Tok> {
    let lower = t.to_ascii_lowercase();
    if let Some(h) = lower.strip_prefix("0f").filter(|h| h.len() == 8) {
        return u32::from_str_radix(h, 16).ok().map(Tok::F32);
    }
    if let Some(h) = lower.strip_prefix("0d").filter(|h| h.len() == 16) {
        return u64::from_str_radix(h, 16).ok().map(Tok::F64);
    }
    // An integer may carry PTX's unsigned suffix `U`.
    let int = lower.strip_suffix('u').unwrap_or(&lower);
    if let Some(h) = int.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).ok().map(Tok::Int);
    }
    if let Some(bits) = int.strip_prefix("0b") {
        return u64::from_str_radix(bits, 2).ok().map(Tok::Int);
    }
    if int.len() > 1 && int.starts_with('0') && int.bytes().all(|c| c.is_ascii_digit()) {
        return u64::from_str_radix(&int[1..], 8).ok().map(Tok::Int);
    }
    if int.bytes().all(|c| c.is_ascii_digit()) {
        return int.parse::<u64>().ok().map(Tok::Int);
    }
    lower.parse::<f64>().ok().map(|f| Tok::F64(f.to_bits()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn literals_in_every_form() {
        assert_eq!(
            toks("0f3F800000 0d3FF0000000000000 0x1F 017 42 42U 1.5"),
            vec![
                Tok::F32(0x3F80_0000),
                Tok::F64(0x3FF0_0000_0000_0000),
                Tok::Int(31),
                Tok::Int(15),
                Tok::Int(42),
                Tok::Int(42),
                Tok::F64(1.5f64.to_bits()),
            ]
        );
    }

    #[test]
    fn statements_comments_and_lines() {
        let t = lex(
            "// c\n@%p1 bra $L__BB0_2; /* x\n y */ ld.global.nc.v2.u16 {%rs1, %rs2}, [%rd1+-4];",
        )
        .unwrap();
        assert_eq!(t[0].tok, Tok::Punct('@'));
        assert_eq!(t[0].line, 2);
        assert_eq!(t[1].tok, Tok::Ident("%p1".into()));
        assert_eq!(t[2].tok, Tok::Ident("bra".into()));
        assert_eq!(t[3].tok, Tok::Ident("$L__BB0_2".into()));
        let ld = t
            .iter()
            .position(|x| x.tok == Tok::Ident("ld.global.nc.v2.u16".into()));
        assert_eq!(t[ld.unwrap()].line, 3);
        assert!(t.iter().any(|x| x.tok == Tok::Punct('-')));
    }
}
