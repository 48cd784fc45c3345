//! PTX text to [`Module`]: directives, functions and their statements, as written. What
//! an instruction means is decided later (lower.rs); here every instruction is an opcode and
//! its operands.

use super::ParseError;
use super::ast::*;
use super::lex::{Tok, Token, lex};

mod body;

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

fn err<T>(line: u32, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

/// Parses a whole module.
pub fn parse(src: &str) -> Result<Module, ParseError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    p.module()
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k).map(|t| &t.tok)
    }

    fn line(&self) -> u32 {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or(0, |t| t.line)
    }

    fn next(&mut self) -> Result<Tok, ParseError> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        self.pos += 1;
        t.map_or_else(|| err(self.line(), "unexpected end of input"), Ok)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            err(
                self.line(),
                format!("expected `{c}`, found {:?}", self.peek()),
            )
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            t => err(self.line(), format!("expected a name, found {t:?}")),
        }
    }

    fn int(&mut self) -> Result<u64, ParseError> {
        match self.next()? {
            Tok::Int(v) => Ok(v),
            t => err(self.line(), format!("expected an integer, found {t:?}")),
        }
    }

    fn peek_ident(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Ident(s)) => Some(s),
            _ => None,
        }
    }

    /// Skips the rest of the current source line (`.loc`, `.file` carry no `;`).
    fn rest_of_line(&mut self, line: u32) -> Vec<Tok> {
        let mut v = Vec::new();
        while self.pos < self.toks.len() && self.toks[self.pos].line == line {
            v.push(self.toks[self.pos].tok.clone());
            self.pos += 1;
        }
        v
    }

    /// Skips a balanced `{ ... }`.
    fn skip_block(&mut self) -> Result<(), ParseError> {
        self.expect('{')?;
        let mut depth = 1;
        while depth > 0 {
            match self.next()? {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn module(&mut self) -> Result<Module, ParseError> {
        let mut m = Module {
            address_size: 64,
            ..Module::default()
        };
        while let Some(t) = self.peek().cloned() {
            let line = self.line();
            let Tok::Ident(d) = t else {
                return err(line, format!("unexpected {t:?} at module scope"));
            };
            match d.as_str() {
                ".version" => {
                    self.pos += 1;
                    m.version = match self.next()? {
                        Tok::F64(bits) => {
                            let s = format!("{}", f64::from_bits(bits));
                            let mut it = s.split('.');
                            let major = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                            let minor = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                            (major, minor)
                        }
                        Tok::Int(v) => (v as u32, 0),
                        t => return err(line, format!("bad .version {t:?}")),
                    };
                }
                ".target" => {
                    self.pos += 1;
                    m.target.push(self.ident()?);
                    while self.eat(',') {
                        m.target.push(self.ident()?);
                    }
                }
                ".address_size" => {
                    self.pos += 1;
                    m.address_size = self.int()? as u32;
                }
                ".file" => {
                    self.pos += 1;
                    let rest = self.rest_of_line(line);
                    if let (Some(Tok::Int(n)), Some(Tok::Str(s))) = (rest.first(), rest.get(1)) {
                        m.files.push((*n as u32, s.clone()));
                    }
                }
                ".section" => {
                    self.pos += 1;
                    self.ident()?;
                    self.skip_block()?;
                }
                ".pragma" => {
                    self.pos += 1;
                    while !self.eat(';') {
                        self.next()?;
                    }
                }
                _ => self.decl(&mut m)?,
            }
        }
        Ok(m)
    }

    /// A module-scope declaration: a function or a variable, with its linkage prefixes.
    fn decl(&mut self, m: &mut Module) -> Result<(), ParseError> {
        let line = self.line();
        let mut external = false;
        loop {
            match self.peek_ident() {
                Some(".visible" | ".weak" | ".common") => self.pos += 1,
                Some(".extern") => {
                    external = true;
                    self.pos += 1;
                }
                _ => break,
            }
        }
        match self.peek_ident() {
            Some(".entry") | Some(".func") => {
                let f = self.func(line)?;
                m.funcs.push(f);
                Ok(())
            }
            Some(".global" | ".const" | ".shared" | ".local") => {
                let v = self.var(external)?;
                m.vars.push(v);
                Ok(())
            }
            other => err(line, format!("unexpected `{other:?}` at module scope")),
        }
    }

    /// `.space [.align n] .type name[...] [= {...}];`
    fn var(&mut self, external: bool) -> Result<VarDecl, ParseError> {
        let line = self.line();
        let space = self.ident()?;
        let mut align = 0;
        let mut ty = String::new();
        loop {
            match self.peek_ident() {
                Some(".align") => {
                    self.pos += 1;
                    align = self.int()? as u32;
                }
                Some(".extern") => self.pos += 1,
                Some(t) if t.starts_with('.') => {
                    ty = t.to_string();
                    self.pos += 1;
                }
                _ => break,
            }
        }
        let name = self.ident()?;
        let array = if self.eat('[') {
            if self.eat(']') {
                Some(None)
            } else {
                let n = self.int()?;
                self.expect(']')?;
                Some(Some(n))
            }
        } else {
            None
        };
        let mut init = Vec::new();
        if self.eat('=') {
            let braced = self.eat('{');
            loop {
                let neg = self.eat('-');
                let v = match self.next()? {
                    Tok::Int(v) => v,
                    Tok::F32(b) => b as u64,
                    Tok::F64(b) => b,
                    t => return err(line, format!("unsupported initializer {t:?}")),
                };
                init.push(if neg { v.wrapping_neg() } else { v });
                if !self.eat(',') {
                    break;
                }
            }
            if braced {
                self.expect('}')?;
            }
        }
        self.expect(';')?;
        Ok(VarDecl {
            space,
            external,
            align,
            ty,
            name,
            array,
            init,
            line,
        })
    }

    fn func(&mut self, line: u32) -> Result<Func, ParseError> {
        let entry = self.ident()? == ".entry";
        // A device function's return parameters come first: `.func (.param .b32 r) name(...)`.
        if !entry && self.peek() == Some(&Tok::Punct('(')) {
            self.params()?;
        }
        let name = self.ident()?;
        let params = if self.peek() == Some(&Tok::Punct('(')) {
            self.params()?
        } else {
            Vec::new()
        };
        let mut f = Func {
            name,
            entry,
            params,
            maxntid: None,
            reqntid: None,
            body: None,
            line,
        };
        loop {
            match self.peek_ident() {
                Some(d @ (".maxntid" | ".reqntid")) => {
                    let is_max = d == ".maxntid";
                    self.pos += 1;
                    let mut v = vec![self.int()? as u32];
                    while self.eat(',') {
                        v.push(self.int()? as u32);
                    }
                    if is_max {
                        f.maxntid = Some(v);
                    } else {
                        f.reqntid = Some(v);
                    }
                }
                Some(".minnctapersm" | ".maxnreg" | ".maxnctapersm" | ".noreturn") => {
                    self.pos += 1;
                    if matches!(self.peek(), Some(Tok::Int(_))) {
                        self.pos += 1;
                    }
                }
                Some(".pragma") => {
                    self.pos += 1;
                    while !self.eat(';') {
                        self.next()?;
                    }
                }
                _ => break,
            }
        }
        if self.eat(';') {
            return Ok(f);
        }
        f.body = Some(self.body()?);
        Ok(f)
    }

    fn params(&mut self) -> Result<Vec<ParamDecl>, ParseError> {
        self.expect('(')?;
        let mut v = Vec::new();
        if self.eat(')') {
            return Ok(v);
        }
        loop {
            let line = self.line();
            let space = self.ident()?;
            if space != ".param" && space != ".reg" {
                return err(line, format!("expected .param, found {space}"));
            }
            let mut align = 0;
            let mut ty = String::new();
            loop {
                match self.peek_ident() {
                    Some(".align") => {
                        self.pos += 1;
                        align = self.int()? as u32;
                    }
                    // Pointer attributes of older PTX: `.ptr .global .align 16`.
                    Some(".ptr" | ".global" | ".shared" | ".const" | ".local") => self.pos += 1,
                    Some(t) if t.starts_with('.') => {
                        ty = t.to_string();
                        self.pos += 1;
                    }
                    _ => break,
                }
            }
            let name = self.ident()?;
            let array = if self.eat('[') {
                let n = self.int()?;
                self.expect(']')?;
                Some(n)
            } else {
                None
            };
            v.push(ParamDecl {
                name,
                ty,
                align,
                array,
            });
            if self.eat(')') {
                return Ok(v);
            }
            self.expect(',')?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
.version 9.0
.target sm_80
.address_size 64

.visible .entry k(
	.param .u64 k_param_0,
	.param .align 8 .b8 k_param_1[16]
)
.maxntid 128, 1, 1
{
	.reg .pred 	%p<3>;
	.reg .b32 	%r<5>;
	.shared .align 4 .b8 _ZZ1kE1s[128];
	.loc	1 6 0
	ld.param.u64 	%rd1, [k_param_0];
	mov.u32 	%r1, %tid.x;
	@!%p1 bra 	$L__BB0_2;
	{ mov.b32 %r2, {0,%rs9};}
	shfl.sync.bfly.b32	%r3|%p2, %r2, 16, 31, -1;
	ld.global.nc.v2.u16 	{%rs1, %rs2}, [%rd1+-4];
$L__BB0_2:
	ret;
}
	.section	.debug_str
	{
$L__info_string0:
.b8 95,90,0
	}
"#;

    #[test]
    fn parses_an_nvcc_style_module() {
        let m = parse(SRC).unwrap();
        assert_eq!(m.version, (9, 0));
        assert_eq!(m.target, vec!["sm_80"]);
        let f = &m.funcs[0];
        assert!(f.entry);
        assert_eq!(f.params.len(), 2);
        assert_eq!(f.params[1].array, Some(16));
        assert_eq!(f.maxntid, Some(vec![128, 1, 1]));
        let body = f.body.as_ref().unwrap();
        let insts: Vec<&Inst> = body
            .iter()
            .filter_map(|s| match s {
                Stmt::Inst(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(insts[2].guard, Some(("%p1".into(), true)));
        assert_eq!(
            insts[3].operands[1],
            Operand::Vec(vec![Operand::Int(0), Operand::Name("%rs9".into())])
        );
        assert_eq!(
            insts[4].operands[0],
            Operand::Pair("%r3".into(), "%p2".into())
        );
        assert_eq!(insts[4].operands[4], Operand::Int(u64::MAX));
        assert_eq!(
            insts[5].operands[1],
            Operand::Addr {
                base: Some("%rd1".into()),
                offset: -4
            }
        );
        assert!(
            body.iter()
                .any(|s| matches!(s, Stmt::Label(l) if l == "$L__BB0_2"))
        );
        assert!(
            body.iter()
                .any(|s| matches!(s, Stmt::Loc { file: 1, line: 6 }))
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e =
            parse(".version 9.0\n.target sm_80\n.entry k() {\n mov.u32 %r1, #;\n}").unwrap_err();
        assert_eq!(e.line, 4);
    }
}
