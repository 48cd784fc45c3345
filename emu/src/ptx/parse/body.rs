//! A function's body: register declarations, labels, guarded instructions and their
//! operands (registers, immediates, addresses, vectors).

use super::super::ParseError;
use super::super::ast::*;
use super::super::lex::Tok;
use super::{Parser, err};

impl Parser {
    pub(super) fn body(&mut self) -> Result<Vec<Stmt>, ParseError> {
        self.expect('{')?;
        let mut out = Vec::new();
        let mut depth = 1;
        loop {
            let line = self.line();
            match self.peek().cloned() {
                None => return err(line, "unterminated function body"),
                Some(Tok::Punct('{')) => {
                    self.pos += 1;
                    depth += 1;
                    out.push(Stmt::Open);
                }
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    depth -= 1;
                    if depth == 0 {
                        return Ok(out);
                    }
                    out.push(Stmt::Close);
                }
                Some(Tok::Punct('@')) => out.push(Stmt::Inst(self.inst()?)),
                Some(Tok::Ident(s)) => {
                    if self.peek_at(1) == Some(&Tok::Punct(':')) {
                        self.pos += 2;
                        out.push(Stmt::Label(s));
                        continue;
                    }
                    match s.as_str() {
                        ".reg" => self.regs(&mut out)?,
                        ".loc" => {
                            self.pos += 1;
                            let rest = self.rest_of_line(line);
                            if let (Some(Tok::Int(f)), Some(Tok::Int(l))) =
                                (rest.first(), rest.get(1))
                            {
                                out.push(Stmt::Loc {
                                    file: *f as u32,
                                    line: *l as u32,
                                });
                            }
                        }
                        ".pragma" => {
                            self.pos += 1;
                            while !self.eat(';') {
                                self.next()?;
                            }
                        }
                        ".shared" | ".local" | ".const" | ".global" => {
                            out.push(Stmt::Var(self.var(false)?));
                        }
                        ".extern" => {
                            self.pos += 1;
                            out.push(Stmt::Var(self.var(true)?));
                        }
                        _ if s.starts_with('.') => {
                            return err(line, format!("unsupported directive `{s}` in a function"));
                        }
                        _ => out.push(Stmt::Inst(self.inst()?)),
                    }
                }
                Some(t) => return err(line, format!("unexpected {t:?} in a function body")),
            }
        }
    }

    /// `.reg .ty a, b<4>, c;`
    fn regs(&mut self, out: &mut Vec<Stmt>) -> Result<(), ParseError> {
        let line = self.line();
        self.pos += 1;
        let mut ty = self.ident()?;
        if ty.starts_with(".v") {
            return err(line, format!("vector registers ({ty}) are not supported"));
        }
        if ty == ".align" {
            self.int()?;
            ty = self.ident()?;
        }
        loop {
            let name = self.ident()?;
            let count = if self.eat('<') {
                let n = self.int()? as u32;
                self.expect('>')?;
                Some(n)
            } else {
                None
            };
            out.push(Stmt::Reg {
                ty: ty.clone(),
                name,
                count,
            });
            if self.eat(';') {
                return Ok(());
            }
            self.expect(',')?;
        }
    }

    fn inst(&mut self) -> Result<Inst, ParseError> {
        let line = self.line();
        let guard = if self.eat('@') {
            let neg = self.eat('!');
            Some((self.ident()?, neg))
        } else {
            None
        };
        let opcode = self.ident()?;
        let mut operands = Vec::new();
        if !self.eat(';') {
            loop {
                operands.push(self.operand()?);
                if self.eat(';') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(Inst {
            guard,
            opcode,
            operands,
            line,
        })
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let line = self.line();
        match self.next()? {
            Tok::Punct('{') => {
                let mut v = Vec::new();
                if !self.eat('}') {
                    loop {
                        v.push(self.operand()?);
                        if self.eat('}') {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                Ok(Operand::Vec(v))
            }
            Tok::Punct('(') => {
                let mut v = Vec::new();
                if !self.eat(')') {
                    loop {
                        v.push(self.operand()?);
                        if self.eat(')') {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                Ok(Operand::Paren(v))
            }
            Tok::Punct('[') => {
                let base = match self.peek().cloned() {
                    Some(Tok::Ident(s)) => {
                        self.pos += 1;
                        Some(s)
                    }
                    _ => None,
                };
                let mut offset = 0i64;
                loop {
                    if self.eat(']') {
                        break;
                    }
                    let sign = if self.eat('+') {
                        if self.eat('-') { -1 } else { 1 }
                    } else if self.eat('-') {
                        -1
                    } else if base.is_none() && offset == 0 {
                        1
                    } else {
                        return err(line, "bad address expression");
                    };
                    offset = offset.wrapping_add(sign * self.int()? as i64);
                }
                Ok(Operand::Addr { base, offset })
            }
            Tok::Punct('-') => match self.next()? {
                Tok::Int(v) => Ok(Operand::Int(v.wrapping_neg())),
                Tok::F32(b) => Ok(Operand::F32(b ^ 0x8000_0000)),
                Tok::F64(b) => Ok(Operand::F64(b ^ (1 << 63))),
                t => err(line, format!("bad negative operand {t:?}")),
            },
            Tok::Punct('!') => Ok(Operand::Not(self.ident()?)),
            Tok::Int(v) => Ok(Operand::Int(v)),
            Tok::F32(b) => Ok(Operand::F32(b)),
            Tok::F64(b) => Ok(Operand::F64(b)),
            Tok::Ident(s) => {
                if self.eat('|') {
                    return Ok(Operand::Pair(s, self.ident()?));
                }
                Ok(Operand::Name(s))
            }
            t => err(line, format!("unexpected {t:?} as an operand")),
        }
    }
}
