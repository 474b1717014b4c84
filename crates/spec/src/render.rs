//! Bounded rendering: a template renders within a size limit, and so does everything it builds
//! on the way, so that no template can make the control plane allocate more than a few times
//! the limit of the field it renders, whatever it computes.
//!
//! The decision that shaped it: minijinja builds the value of `'x' * n`, `a ~ b`, `a + b`,
//! `join`, `replace`, `indent`, `format` or `batch` in full before anything looks at it, and its
//! fuel counts instructions, not bytes (`{% set ns.s = ns.s ~ ns.s %}` doubles a string with each
//! step). Checking the output after rendering bounds the manifest but not the memory; refusing
//! the operators on strings at compile time is impossible (the types are known only when
//! rendering) and would refuse `{{ site.name ~ "-db" }}`. So the compiled instructions of each
//! template are rewritten, through minijinja's `unstable_machinery` (pinned to an exact version
//! in the workspace for that reason), before they run:
//!
//! - every `+`, `*` and `~` is preceded by a call that computes the size of its result from the
//!   operands, refuses it when over the limit and charges it to the render's budget, then hands
//!   the operands back unchanged for the original instruction (minijinja's own semantics and
//!   error messages stay);
//! - the filters whose output grows with an argument (`join`, `replace`, `indent`, `batch`,
//!   `slice`, `tojson`'s indent, `format`) are replaced by versions that check the size first,
//!   and the result of every filter, function and method call is measured and charged;
//! - every piece of output, including output captured by `{% set %}...{% endset %}` or
//!   `{% filter %}` (which never reaches the final writer), is charged as it is written.
//!
//! Every value a template makes is thus at most the field's limit, and all it makes together at
//! most [`WORK_FACTOR`] times it; after the render, the output itself is held to the limit. The
//! instructions that would reach outside one template (`include`, `extends`, `import`, blocks)
//! are refused: a template is one string of a service's spec. Names starting with `__atoll` are
//! reserved for the checks.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use minijinja::machinery::{self, Instruction, Instructions};
use minijinja::value::{Object, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

/// How large rendered templates may be, in bytes. Settable on the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One rendered env value.
    pub value: usize,
    /// One rendered file.
    pub file: usize,
    /// Everything one site's manifest holds.
    pub manifest: usize,
}

impl Limits {
    /// 64 KiB a value, 1 MiB a file, 8 MiB a manifest.
    pub const DEFAULT: Limits = Limits {
        value: 64 * 1024,
        file: 1024 * 1024,
        manifest: 8 * 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// All a render may build, values and output together, as a multiple of its field's limit.
pub const WORK_FACTOR: usize = 4;

/// The size a render went over, when it did: what the compiler reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exceeded {
    /// One value (or the output) would have been `size` bytes, over `limit`.
    Value { size: usize, limit: usize },
    /// All the render built together went over `WORK_FACTOR` times the limit.
    Work { limit: usize },
}

const BUDGET: &str = "__atoll_budget";
const RESERVED: &str = "__atoll";
const CHECK_ADD: &str = "__atoll_add";
const CHECK_MUL: &str = "__atoll_mul";
const CHECK_CONCAT: &str = "__atoll_concat";
const CHECK_MADE: &str = "__atoll_made";
const CHECK_EMIT: &str = "__atoll_emit";
const CHECK_RAW: &str = "__atoll_raw";

/// A template's instructions with the checks in, ready to render many times.
pub struct Program<'s> {
    instructions: Instructions<'s>,
}

impl std::fmt::Debug for Program<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").finish_non_exhaustive()
    }
}

/// Rewrites the compiled `template` (added to an [`environment`](crate::template::environment))
/// with the checks in, or says why it cannot run here.
pub fn program<'s>(template: &minijinja::Template<'s, 's>) -> Result<Program<'s>, String> {
    let compiled = machinery::get_compiled_template(template);
    checked_program(&compiled.instructions, compiled.blocks.is_empty())
}

/// Compiles `source` with the checks in, keeping the lifetime of the text (a template taken
/// back from an environment lives only as long as that borrow).
pub fn compile(source: &str) -> Result<Program<'_>, (String, Option<usize>)> {
    let ast = machinery::parse(source, source, crate::template::syntax())
        .map_err(|e| (e.detail().unwrap_or("syntax error").to_owned(), e.line()))?;
    let mut generator = machinery::CodeGenerator::new(source, source);
    generator.compile_stmt(&ast);
    let (instructions, blocks) = generator.finish();
    checked_program(&instructions, blocks.is_empty()).map_err(|problem| (problem, None))
}

fn checked_program<'s>(old: &Instructions<'s>, no_blocks: bool) -> Result<Program<'s>, String> {
    if !no_blocks {
        return Err(outside());
    }
    let mut code: Vec<(Vec<Instruction<'s>>, u32)> = Vec::new();
    let mut index = 0u32;
    while let Some(instruction) = old.get(index) {
        code.push((rewrite(instruction)?, index));
        index += 1;
    }
    // Where each old instruction starts in the new code, for the jumps.
    let mut starts = Vec::with_capacity(code.len() + 1);
    let mut at = 0u32;
    for (group, _) in &code {
        starts.push(at);
        at += group.len() as u32;
    }
    starts.push(at);
    let target = |t: &u32| starts.get(*t as usize).copied().unwrap_or(at);
    let mut out = Instructions::new(old.name(), old.source());
    for (group, from) in code {
        for instruction in group {
            let instruction = match instruction {
                Instruction::Jump(t) => Instruction::Jump(target(&t)),
                Instruction::JumpIfFalse(t) => Instruction::JumpIfFalse(target(&t)),
                Instruction::JumpIfFalseOrPop(t) => Instruction::JumpIfFalseOrPop(target(&t)),
                Instruction::JumpIfTrueOrPop(t) => Instruction::JumpIfTrueOrPop(target(&t)),
                Instruction::Iterate(t) => Instruction::Iterate(target(&t)),
                other => other,
            };
            match (old.get_span(from), old.get_line(from)) {
                (Some(span), _) => out.add_with_span(instruction, span),
                (None, Some(line)) => out.add_with_line(instruction, line as u16),
                (None, None) => out.add(instruction),
            };
        }
    }
    Ok(Program { instructions: out })
}

fn outside() -> String {
    "include, extends, import and blocks are not supported: a template is one string".to_owned()
}

/// The instructions that replace one.
fn rewrite<'s>(instruction: &Instruction<'s>) -> Result<Vec<Instruction<'s>>, String> {
    use Instruction as I;
    let call = |name: &'static str, args: u16| I::CallFunction(name, Some(args));
    Ok(match instruction {
        I::Lookup(name)
        | I::StoreLocal(name)
        | I::GetAttr(name)
        | I::SetAttr(name)
        | I::CallFunction(name, _)
        | I::CallMethod(name, _)
        | I::ApplyFilter(name, _, _)
        | I::PerformTest(name, _, _)
            if name.starts_with(RESERVED) =>
        {
            return Err(format!(
                "`{name}`: names starting with `{RESERVED}` are reserved"
            ));
        }
        I::Include(_) | I::LoadBlocks | I::CallBlock(_) | I::ExportLocals | I::FastSuper => {
            return Err(outside());
        }
        I::CallFunction("super", _) => return Err(outside()),
        I::EmitRaw(text) => vec![
            I::LoadConst(Value::from(text.len())),
            call(CHECK_RAW, 1),
            I::DiscardTop,
            I::EmitRaw(text),
        ],
        I::Emit => vec![call(CHECK_EMIT, 1), I::Emit],
        I::Add => vec![call(CHECK_ADD, 2), I::UnpackList(2), I::Add],
        I::Mul => vec![call(CHECK_MUL, 2), I::UnpackList(2), I::Mul],
        I::StringConcat => vec![call(CHECK_CONCAT, 2), I::UnpackList(2), I::StringConcat],
        I::ApplyFilter(..) | I::CallFunction(..) | I::CallMethod(..) | I::CallObject(..) => {
            vec![instruction.clone(), call(CHECK_MADE, 1)]
        }
        other => vec![other.clone()],
    })
}

/// The render's bookkeeping, reachable from the checks through the context.
#[derive(Debug)]
struct Budget {
    limit: usize,
    work_left: AtomicUsize,
    exceeded: Mutex<Option<Exceeded>>,
}

impl Object for Budget {}

impl Budget {
    fn of(state: &State) -> Result<std::sync::Arc<Budget>, Error> {
        state
            .lookup(BUDGET)
            .and_then(|v| v.downcast_object::<Budget>())
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "rendered without a budget"))
    }

    fn refuse(&self, exceeded: Exceeded) -> Error {
        if let Ok(mut slot) = self.exceeded.lock() {
            slot.get_or_insert(exceeded);
        }
        Error::new(ErrorKind::InvalidOperation, describe(exceeded))
    }

    /// Refuses a value of `size` bytes over the limit, else charges it.
    fn charge(&self, size: usize) -> Result<(), Error> {
        if size > self.limit {
            return Err(self.refuse(Exceeded::Value {
                size,
                limit: self.limit,
            }));
        }
        let left = self.work_left.load(Ordering::Relaxed);
        if size > left {
            return Err(self.refuse(Exceeded::Work { limit: self.limit }));
        }
        self.work_left.store(left - size, Ordering::Relaxed);
        Ok(())
    }

    /// How much a measure needs to look at before it knows the answer is too much.
    fn cap(&self) -> usize {
        self.limit.saturating_add(1)
    }
}

/// What an [`Exceeded`] says to the person who wrote the template.
pub fn describe(exceeded: Exceeded) -> String {
    match exceeded {
        Exceeded::Value { size, limit } => format!(
            "the template would make a value of {size} bytes, over the limit of {limit} bytes"
        ),
        Exceeded::Work { limit } => format!(
            "the template builds more than {} bytes while rendering ({WORK_FACTOR} times the limit of {limit} bytes)",
            limit.saturating_mul(WORK_FACTOR)
        ),
    }
}

/// Bytes a value holds, roughly what it takes in memory and in text, counting no further than
/// `cap`. A lazy sequence (`range(n)`) holds nothing yet.
fn measure(value: &Value, cap: usize) -> usize {
    const ITEM: usize = 16;
    match value.kind() {
        ValueKind::String => value.as_str().map_or(0, str::len),
        ValueKind::Bytes => value.as_bytes().map_or(0, <[u8]>::len),
        ValueKind::Seq | ValueKind::Map => {
            let mut total = 0usize;
            let Ok(items) = value.try_iter() else {
                return ITEM;
            };
            let is_map = value.kind() == ValueKind::Map;
            for item in items {
                let inner = if is_map {
                    measure(&value.get_item(&item).unwrap_or_default(), cap)
                } else {
                    0
                };
                total = total
                    .saturating_add(ITEM)
                    .saturating_add(measure(&item, cap))
                    .saturating_add(inner);
                if total > cap {
                    break;
                }
            }
            total
        }
        _ => ITEM,
    }
}

/// The length of a value as text, counting no further than `cap`.
fn text_len(value: &Value, cap: usize) -> usize {
    match value.kind() {
        ValueKind::String => value.as_str().map_or(0, str::len),
        ValueKind::Number | ValueKind::Bool | ValueKind::None | ValueKind::Undefined => {
            value.to_string().len()
        }
        _ => measure(value, cap),
    }
}

/// Size of what `*` makes of a string or a sequence and a count, if it makes one.
fn repeated(value: &Value, count: &Value, cap: usize) -> Option<usize> {
    let n = count.as_usize()?;
    let one = match value.kind() {
        ValueKind::String => value.as_str().map_or(0, str::len),
        ValueKind::Seq | ValueKind::Iterable => value
            .len()
            .unwrap_or(0)
            .saturating_mul(16)
            .saturating_add(measure(value, cap)),
        _ => return None,
    };
    Some(one.saturating_mul(n))
}

/// The operands back, in the order `UnpackList` restores them.
fn operands(a: Value, b: Value) -> Value {
    Value::from(vec![b, a])
}

fn check_add(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    let cap = budget.cap();
    let both = |k: &[ValueKind]| k.contains(&a.kind()) && k.contains(&b.kind());
    if both(&[ValueKind::String]) || both(&[ValueKind::Seq, ValueKind::Iterable]) {
        budget.charge(measure(&a, cap).saturating_add(measure(&b, cap)))?;
    }
    Ok(operands(a, b))
}

fn check_mul(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    let cap = budget.cap();
    if let Some(size) = repeated(&a, &b, cap).or_else(|| repeated(&b, &a, cap)) {
        budget.charge(size)?;
    }
    Ok(operands(a, b))
}

fn check_concat(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    let cap = budget.cap();
    budget.charge(text_len(&a, cap).saturating_add(text_len(&b, cap)))?;
    Ok(operands(a, b))
}

fn check_made(state: &State, value: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    budget.charge(measure(&value, budget.cap()))?;
    Ok(value)
}

fn check_emit(state: &State, value: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    if !value.is_undefined() {
        budget.charge(text_len(&value, budget.cap()))?;
    }
    Ok(value)
}

fn check_raw(state: &State, len: usize) -> Result<Value, Error> {
    Budget::of(state)?.charge(len)?;
    Ok(Value::from(()))
}

/// A filter's arguments as called: the filtered value first, then the positional arguments,
/// then perhaps the keyword arguments.
struct Args<'a>(&'a [Value]);

impl Args<'_> {
    /// The argument at `pos` (the filtered value is 0), or the keyword argument `name`.
    fn get(&self, pos: usize, name: &str) -> Option<Value> {
        let kwargs = self.0.last().filter(|v| v.is_kwargs());
        let positional = self.0.len() - usize::from(kwargs.is_some());
        if pos < positional {
            return self.0.get(pos).cloned();
        }
        kwargs
            .and_then(|k| k.get_attr(name).ok())
            .filter(|v| !v.is_undefined())
    }

    fn text(&self, pos: usize, name: &str) -> String {
        self.get(pos, name)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }
}

type Precheck = fn(&Budget, &Args<'_>) -> Result<(), Error>;

/// A builtin filter behind a check of what it would build.
fn checked(
    builtin: Value,
    precheck: Precheck,
) -> impl Fn(&mut State, Rest<minijinja::value::ValueOrKwargs>) -> Result<Value, Error>
+ Send
+ Sync
+ 'static {
    move |state, args| {
        let args: Vec<Value> = args.0.into_iter().map(Value::from).collect();
        precheck(&*Budget::of(state)?, &Args(&args))?;
        builtin.call(state, &args)
    }
}

/// `join`: the items and a separator between each two.
fn join(budget: &Budget, args: &Args<'_>) -> Result<(), Error> {
    let cap = budget.cap();
    let sep = args.text(1, "d").len();
    let mut size = 0usize;
    if let Some(Ok(items)) = args.get(0, "").map(|v| v.try_iter()) {
        for item in items {
            size = size
                .saturating_add(sep)
                .saturating_add(text_len(&item, cap));
            if size > cap {
                break;
            }
        }
    }
    budget.charge(size)
}

/// `replace`: each occurrence (each gap between characters when replacing "") made larger.
fn replace(budget: &Budget, args: &Args<'_>) -> Result<(), Error> {
    let text = args.text(0, "");
    let from = args.text(1, "old");
    let to = args.text(2, "new");
    let times = if from.is_empty() {
        text.chars().count() + 1
    } else {
        text.matches(from.as_str()).count()
    };
    budget.charge(text.len().saturating_add(times.saturating_mul(to.len())))
}

/// `indent`: a width's spaces on each line.
fn indent(budget: &Budget, args: &Args<'_>) -> Result<(), Error> {
    let text = args.text(0, "");
    let width = args.get(1, "width").and_then(|w| w.as_usize()).unwrap_or(0);
    let lines = text.lines().count() + 1;
    budget.charge(text.len().saturating_add(lines.saturating_mul(width)))
}

/// `batch` and `slice`: padding or pieces up to a count, which can outgrow the list.
fn grouped(budget: &Budget, args: &Args<'_>) -> Result<(), Error> {
    let value = args.get(0, "").unwrap_or_default();
    let count = args.get(1, "count").and_then(|c| c.as_usize()).unwrap_or(0);
    budget.charge(
        measure(&value, budget.cap())
            .saturating_add(value.len().unwrap_or(0).saturating_mul(16))
            .saturating_add(count.saturating_mul(16)),
    )
}

/// `tojson`: an indent of at most 16, as it is repeated at every level of every line.
fn tojson(_: &Budget, args: &Args<'_>) -> Result<(), Error> {
    const MAX_INDENT: usize = 16;
    match args.get(1, "indent").and_then(|i| i.as_usize()) {
        Some(i) if i > MAX_INDENT => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson indents by at most {MAX_INDENT}"),
        )),
        _ => Ok(()),
    }
}

/// `format` with no width or precision: `%5000000s` would build its padding in full.
fn format(budget: &Budget, args: &Args<'_>) -> Result<(), Error> {
    let spec = args.text(0, "");
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        while let Some(&flag) = chars.peek() {
            if flag.is_ascii_alphabetic() || flag == '%' {
                chars.next();
                break;
            }
            if flag.is_ascii_digit() || flag == '.' || flag == '*' {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "format: widths and precisions are not supported in atoll templates",
                ));
            }
            chars.next();
        }
    }
    let cap = budget.cap();
    let size = args.0[1..]
        .iter()
        .fold(spec.len(), |n, a| n.saturating_add(text_len(a, cap)));
    budget.charge(size)
}

/// Adds the checks, and the filters that check sizes before building, to `env`.
pub fn install(env: &mut Environment<'_>) {
    env.add_function(CHECK_ADD, check_add);
    env.add_function(CHECK_MUL, check_mul);
    env.add_function(CHECK_CONCAT, check_concat);
    env.add_function(CHECK_MADE, check_made);
    env.add_function(CHECK_EMIT, check_emit);
    env.add_function(CHECK_RAW, check_raw);
    use minijinja::filters as builtin;
    let wrap = |f: Value, p: Precheck| checked(f, p);
    env.add_filter("join", wrap(Value::from_function(builtin::join), join));
    env.add_filter(
        "replace",
        wrap(Value::from_function(builtin::replace), replace),
    );
    env.add_filter(
        "indent",
        wrap(Value::from_function(builtin::indent), indent),
    );
    env.add_filter("batch", wrap(Value::from_function(builtin::batch), grouped));
    env.add_filter("slice", wrap(Value::from_function(builtin::slice), grouped));
    env.add_filter(
        "tojson",
        wrap(Value::from_function(builtin::tojson), tojson),
    );
    env.add_filter(
        "format",
        wrap(Value::from_function(builtin::format), format),
    );
}

/// Renders `program` with `ctx` (a map) within `limit` bytes: the output, or minijinja's error
/// and, when a size was the reason, which.
pub fn render(
    env: &Environment<'_>,
    program: &Program<'_>,
    ctx: BTreeMap<String, Value>,
    limit: usize,
) -> Result<String, (Error, Option<Exceeded>)> {
    let budget = std::sync::Arc::new(Budget {
        limit,
        work_left: AtomicUsize::new(limit.saturating_mul(WORK_FACTOR)),
        exceeded: Mutex::new(None),
    });
    let mut root = ctx;
    root.insert(BUDGET.to_owned(), Value::from_dyn_object(budget.clone()));
    let mut text = String::new();
    let no_blocks = BTreeMap::new();
    let exceeded = |b: &Budget| b.exceeded.lock().ok().and_then(|e| *e);
    let result = machinery::eval(
        env,
        &program.instructions,
        Value::from(root),
        &no_blocks,
        &mut machinery::make_string_output(&mut text),
        minijinja::AutoEscape::None,
    );
    if let Err(e) = result {
        return Err((e, exceeded(&budget)));
    }
    if text.len() > limit {
        let e = Exceeded::Value {
            size: text.len(),
            limit,
        };
        return Err((
            Error::new(ErrorKind::InvalidOperation, describe(e)),
            Some(e),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    const LIMIT: usize = 64 * 1024;

    fn run(source: &str, limit: usize) -> Result<String, (Error, Option<Exceeded>)> {
        let mut env = crate::template::environment();
        env.add_template("t", source)
            .expect("the test's template parses");
        let template = env.get_template("t").expect("added");
        let program = program(&template).expect("rewritable");
        let mut ctx = BTreeMap::new();
        ctx.insert("name".to_owned(), Value::from("store-1"));
        ctx.insert("big".to_owned(), Value::from("y".repeat(1000)));
        ctx.insert("hosts".to_owned(), Value::from(vec!["a", "b", "c"]));
        render(&env, &program, ctx, limit)
    }

    /// Refused for its size, and quickly.
    fn refused(source: &str) {
        let started = Instant::now();
        let result = run(source, LIMIT);
        assert!(
            matches!(result, Err((_, Some(_)))),
            "{source}: {:?}",
            result.map(|s| s.len())
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{source}: slow");
    }

    #[test]
    fn a_template_that_multiplies_a_string_is_refused() {
        refused("{{ 'x' * 100000000 }}");
        refused("{{ 100000000 * 'x' }}");
        refused("{% set s = 'x' * 60000 %}{{ s ~ s }}");
    }

    #[test]
    fn a_template_that_doubles_a_string_in_a_loop_is_refused() {
        refused(
            "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        );
        refused(
            "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        );
    }

    #[test]
    fn a_template_that_repeats_a_list_is_refused() {
        refused("{{ ([big] * 100000000)|length }}");
        refused("{{ (range(100000)|list * 1000)|length }}");
    }

    #[test]
    fn a_template_that_joins_or_replaces_into_a_giant_is_refused() {
        refused("{{ range(100000)|join(big) }}");
        refused("{{ big|replace('', big) }}");
        refused("{{ big|replace('y', big) }}");
        refused("{{ (big ~ '\\n') * 60 | indent(1000000000) }}");
        refused("{{ 'a\\nb\\nc'|indent(width=1000000000) }}");
        refused("{{ [1]|batch(1000000000, 'x') }}");
        refused("{{ [1]|slice(1000000000) }}");
    }

    #[test]
    fn output_captured_by_set_is_bounded_too() {
        refused("{% set x %}{% for i in range(100000) %}{{ big }}{% endfor %}{% endset %}");
        refused(
            "{% filter upper %}{% for i in range(100000) %}{{ big }}{% endfor %}{% endfilter %}",
        );
        refused("{% for i in range(100000) %}{{ big }}{% endfor %}");
    }

    #[test]
    fn a_range_too_large_or_nested_loops_are_refused() {
        let started = Instant::now();
        assert!(run("{% for i in range(10**9) %}x{% endfor %}", LIMIT).is_err());
        assert!(
            run(
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                LIMIT
            )
            .is_err()
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn format_with_a_width_is_refused() {
        let (e, _) = run("{{ '%999999999s'|format('x') }}", LIMIT).unwrap_err();
        assert!(e.to_string().contains("widths"), "{e}");
        assert!(run("{{ '%.99999f'|format(1.5) }}", LIMIT).is_err());
        assert_eq!(
            run("{{ '%s-%d %%'|format('a', 3) }}", LIMIT).unwrap(),
            "a-3 %"
        );
        assert!(run("{{ big|tojson(indent=1000000) }}", LIMIT).is_err());
    }

    #[test]
    fn many_small_pieces_up_to_the_limit_render() {
        let text = run("{% for i in range(10000) %}{{ i }},{% endfor %}", LIMIT).unwrap();
        assert_eq!(text.len(), 48890);
    }

    #[test]
    fn the_output_is_held_to_the_limit() {
        assert_eq!(run("{{ big }}", 1000).unwrap().len(), 1000);
        let (_, exceeded) = run("{{ big }}x", 1000).unwrap_err();
        assert!(
            matches!(exceeded, Some(Exceeded::Value { limit: 1000, .. })),
            "{exceeded:?}"
        );
    }

    #[test]
    fn ordinary_templates_render_as_before() {
        let cases = [
            ("{{ name ~ '-db' }}", "store-1-db"),
            (
                "{{ 1 + 2 }} {{ 2 * 3 }} {{ 'ab' * 3 }} {{ [1] + [2] }}",
                "3 6 ababab [1, 2]",
            ),
            (
                "{% for h in hosts %}{{ h }}{% if not loop.last %},{% endif %}{% endfor %}",
                "a,b,c",
            ),
            ("{{ hosts|join(', ') }} {{ hosts|join }}", "a, b, c abc"),
            ("{{ 'a-b'|replace('-', '_') }}", "a_b"),
            ("{{ nope|default('d') }} {{ name and 'y' or 'n' }}", "d y"),
            ("{% set x %}in{% endset %}{{ x|upper }}", "IN"),
            ("{{ 'a\nb'|indent(2) }}", "a\n  b"),
            (
                "{{ hosts|batch(2)|list|length }} {{ hosts|tojson }}",
                "2 [\"a\", \"b\", \"c\"]",
            ),
            (
                "{% if name == 'store-1' %}yes{% else %}no{% endif %}",
                "yes",
            ),
        ];
        for (source, want) in cases {
            assert_eq!(
                run(source, LIMIT).map_err(|e| e.0.to_string()).as_deref(),
                Ok(want),
                "{source}"
            );
        }
    }

    #[test]
    fn an_undefined_value_fails_as_it_does_unchecked() {
        for source in [
            "{{ nope }}",
            "{{ nope ~ 'x' }}",
            "{{ nope + 1 }}",
            "{{ nope * 2 }}",
        ] {
            let (e, _) = run(source, LIMIT).unwrap_err();
            let mut plain = Environment::new();
            plain.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
            let unchecked = plain.render_str(source, ()).unwrap_err();
            assert_eq!(e.kind(), unchecked.kind(), "{source}: {e}");
        }
    }

    #[test]
    fn include_and_reserved_names_are_refused() {
        let mut env = crate::template::environment();
        for source in [
            "{% include 'x' %}",
            "{% extends 'x' %}",
            "{% block b %}{% endblock %}",
            "{% import 'x' as m %}",
            "{{ __atoll_budget }}",
            "{% set __atoll_add = 1 %}",
        ] {
            env.add_template_owned(source.to_owned(), source.to_owned())
                .expect("parses");
            let template = env.get_template(source).expect("added");
            assert!(program(&template).is_err(), "{source}");
        }
    }

    /// An expression tree of the operators and filters that build values.
    fn expression() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("big".to_owned()),
            Just("name".to_owned()),
            Just("'ab'".to_owned()),
            Just("hosts".to_owned()),
            (0u32..1_000_000).prop_map(|n| n.to_string()),
            Just("range(1000)".to_owned()),
        ];
        leaf.prop_recursive(6, 64, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} * {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} ~ {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}|join({b}))")),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| format!("({a}|replace('a', {b}))")),
                inner.clone().prop_map(|a| format!("({a}|list)")),
                inner.clone().prop_map(|a| format!("([{a}, {a}, {a}])")),
                inner.prop_map(|a| format!("({a}|indent(100))")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn no_expression_renders_past_its_limit_or_for_long(expr in expression()) {
            let started = Instant::now();
            let source = format!(
                "{{% set ns = namespace(v={expr}) %}}{{% for i in range(20) %}}{{% set ns.v = ns.v ~ ns.v %}}{{% endfor %}}{{{{ {expr} }}}}{{{{ ns.v }}}}"
            );
            if let Ok(text) = run(&source, LIMIT) {
                prop_assert!(text.len() <= LIMIT);
            }
            prop_assert!(started.elapsed() < Duration::from_secs(2), "{source}");
        }
    }
}
