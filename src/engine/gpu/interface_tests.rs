//! The shader interfaces, checked without a GPU. Every shader module of [`Shader::ALL`] is
//! parsed and validated by naga (wgpu's shader compiler) and its WGSL side is compared with
//! the Rust side:
//! - group 0's bindings (index; uniform, read-only or read-write storage) with
//!   [`Shader::bindings`], which builds the bind group layout, and each entry point's use of
//!   them (a written binding is read-write; every binding is used by some entry point);
//! - the entry points and override constants with [`Shader::entry_points`] and
//!   [`Shader::overrides`], which `kernels::dispatch` enforces on every call;
//! - the uniform struct's size, field names, offsets and scalar types with the `#[repr(C)]`
//!   struct the engine uploads (`offset_of!` on the Rust side);
//! - the prelude's named constants with the codes of the Rust [`WgslEnum`]s (and the base rows,
//!   NB, NS, the label stream), and that an enum's override is compared only with its named
//!   constants, never with a bare number;
//! - the workgroup sizes with the dispatch helpers, and the GEMM's workgroup memory with
//!   [`GemmTile::workgroup_bytes`].
//!
//! Then every pipeline variant the engine may create ([`all_variants`]: every GEMM blocking,
//! transpose, epilogue, prologue and power; every activation; every family; every LANES) is
//! specialised with the override values that the Rust code passes, and validated again.

use super::accumulate::AccParams;
use super::forward::Count;
use super::kernels::{Epilogue, GemmParams, Prologue};
use super::plan::{FamilyParams, HessParams, ReduceParams, UnitParams};
use super::shaders::{
    all_variants, prelude_constants, Binding, GemmTile, GpuFamily, RngTestParams, Shader, WgslEnum,
};
use super::train::BpParams;
use crate::model::Activation;
use naga::valid::{Capabilities, GlobalUse, ModuleInfo, ValidationFlags, Validator};
use naga::{AddressSpace, Module, ScalarKind, StorageAccess, TypeInner};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One field of a `#[repr(C)]` Rust uniform struct.
#[derive(Debug)]
struct RustField {
    name: &'static str,
    offset: usize,
    size: usize,
    /// The scalar kind; None for a padding array.
    kind: Option<ScalarKind>,
}

#[derive(Debug)]
struct RustStruct {
    name: &'static str,
    size: usize,
    fields: Vec<RustField>,
}

/// The Rust types a uniform field may have.
trait FieldType {
    const KIND: Option<ScalarKind>;
}

impl FieldType for u32 {
    const KIND: Option<ScalarKind> = Some(ScalarKind::Uint);
}

impl FieldType for i32 {
    const KIND: Option<ScalarKind> = Some(ScalarKind::Sint);
}

impl FieldType for f32 {
    const KIND: Option<ScalarKind> = Some(ScalarKind::Float);
}

/// Padding only: a uniform array needs a 16-byte stride in WGSL.
impl<const N: usize> FieldType for [u32; N] {
    const KIND: Option<ScalarKind> = None;
}

fn field_type<T: FieldType>(_: &T) -> (Option<ScalarKind>, usize) {
    (T::KIND, std::mem::size_of::<T>())
}

/// The layout of a Rust struct from the compiler (`size_of`, `offset_of!`). The field list is
/// exhaustive: a field added to or removed from the struct stops the build here.
macro_rules! rust_struct {
    ($t:ident { $($f:ident),* $(,)? }) => {{
        fn _exhaustive(v: $t) {
            let $t { $($f: _),* } = v;
        }
        let v: $t = bytemuck::Zeroable::zeroed();
        RustStruct {
            name: stringify!($t),
            size: std::mem::size_of::<$t>(),
            fields: vec![$({
                let (kind, size) = field_type(&v.$f);
                RustField {
                    name: stringify!($f),
                    offset: std::mem::offset_of!($t, $f),
                    size,
                    kind,
                }
            }),*],
        }
    }};
}

/// The Rust struct the engine uploads as each shader's binding 0.
fn rust_uniform(shader: Shader) -> RustStruct {
    match shader {
        Shader::Gemm(_) => rust_struct!(GemmParams {
            m,
            n,
            k,
            lda,
            ldb,
            ldc,
            off_a,
            off_b,
            off_c,
            stride_a,
            stride_b,
            stride_c,
            off_bias,
            b_cols,
            pro_nl,
            _pad
        }),
        Shader::Activation => rust_struct!(Count { count, _p }),
        Shader::Family => rust_struct!(FamilyParams {
            bb,
            o,
            ns,
            sample0,
            input0,
            key_lo,
            key_hi,
            _p0,
            sigma2,
            _p1
        }),
        Shader::Hessian => rust_struct!(HessParams { bb, nl, cols, _p }),
        Shader::UnitStats => rust_struct!(UnitParams {
            bb,
            nl,
            o,
            has_labels,
            sigma2,
            _p
        }),
        Shader::ReduceSamples => rust_struct!(ReduceParams {
            bb,
            nl,
            ns,
            first,
            last,
            o,
            _p
        }),
        Shader::Backprop => rust_struct!(BpParams {
            bb,
            o,
            count,
            _p0,
            scale,
            _p1
        }),
        Shader::Accumulate => rust_struct!(AccParams {
            bb,
            nl,
            nch,
            n_in,
            row,
            merged,
            _p
        }),
        Shader::RngTest => rust_struct!(RngTestParams {
            count,
            sample,
            block,
            stream,
            key_lo,
            key_hi,
            _p
        }),
    }
}

/// A parsed and validated shader module.
struct Compiled {
    source: String,
    module: Module,
    info: ModuleInfo,
}

fn compile(shader: Shader) -> Compiled {
    let source = shader.source();
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{}: {}", shader.name(), e.emit_to_string(&source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", shader.name(), e.emit_to_string(&source)));
    Compiled {
        source,
        module,
        info,
    }
}

fn label(shader: Shader) -> String {
    match shader {
        Shader::Gemm(tile) => format!("{} {:?}", shader.name(), tile.blocking()),
        _ => shader.name().to_string(),
    }
}

/// Group 0's bindings of the module: binding → (global, kind).
fn wgsl_bindings(
    shader: Shader,
    m: &Module,
) -> BTreeMap<u32, (naga::Handle<naga::GlobalVariable>, Binding)> {
    let mut out = BTreeMap::new();
    for (h, g) in m.global_variables.iter() {
        let Some(rb) = &g.binding else { continue };
        let name = g.name.as_deref().unwrap_or("?");
        assert_eq!(rb.group, 0, "{}: '{name}' is not in group 0", label(shader));
        let kind = match g.space {
            AddressSpace::Uniform => Binding::Uniform,
            AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
                Binding::ReadWrite
            }
            AddressSpace::Storage { .. } => Binding::Read,
            other => panic!("{}: '{name}' in {other:?}", label(shader)),
        };
        assert!(
            out.insert(rb.binding, (h, kind)).is_none(),
            "{}: binding {} twice",
            label(shader),
            rb.binding
        );
    }
    out
}

/// Checks the bindings against [`Shader::bindings`] and each entry point's use of them;
/// returns the number of entry points.
fn check_bindings(shader: Shader, c: &Compiled) -> usize {
    let m = &c.module;
    let bindings = wgsl_bindings(shader, m);
    let wgsl: Vec<(u32, Binding)> = bindings.iter().map(|(b, (_, k))| (*b, *k)).collect();
    let rust: Vec<(u32, Binding)> = shader
        .bindings()
        .iter()
        .enumerate()
        .map(|(i, k)| (i as u32, *k))
        .collect();
    assert_eq!(
        wgsl,
        rust,
        "{}: WGSL bindings (left) differ from Shader::bindings (right)",
        label(shader)
    );
    let entries: BTreeSet<&str> = m.entry_points.iter().map(|e| e.name.as_str()).collect();
    let listed: BTreeSet<&str> = shader.entry_points().iter().copied().collect();
    assert_eq!(
        entries,
        listed,
        "{}: WGSL entry points (left) differ from Shader::entry_points (right)",
        label(shader)
    );
    let mut used = BTreeSet::new();
    for (i, ep) in m.entry_points.iter().enumerate() {
        assert_eq!(ep.stage, naga::ShaderStage::Compute, "{}", ep.name);
        let want = match shader {
            // 16×16 invocations per GEMM tile (GemmTile::tile).
            Shader::Gemm(_) => [16, 16, 1],
            // 64-wide 1-D kernels (kernels::groups_1d, groups_per_item, plan.rs).
            _ => [64, 1, 1],
        };
        assert_eq!(
            ep.workgroup_size,
            want,
            "{} {}: workgroup size",
            label(shader),
            ep.name
        );
        let uses = c.info.get_entry_point(i);
        for (b, (h, kind)) in &bindings {
            let u = uses[*h];
            if u.contains(GlobalUse::WRITE) {
                assert_eq!(
                    *kind,
                    Binding::ReadWrite,
                    "{} {}: writes binding {b}",
                    label(shader),
                    ep.name
                );
            }
            if !u.is_empty() {
                used.insert(*b);
            }
        }
    }
    let unused: Vec<u32> = bindings
        .keys()
        .filter(|b| !used.contains(b))
        .copied()
        .collect();
    assert!(
        unused.is_empty(),
        "{}: no entry point uses bindings {unused:?}",
        label(shader)
    );
    m.entry_points.len()
}

/// Checks binding 0's struct against the Rust struct of [`rust_uniform`].
fn check_uniform(shader: Shader, c: &Compiled) {
    let m = &c.module;
    let rust = rust_uniform(shader);
    let what = format!("{} uniform vs {}", label(shader), rust.name);
    let (h, _) = wgsl_bindings(shader, m)[&0];
    let TypeInner::Struct { members, span } = &m.types[m.global_variables[h].ty].inner else {
        panic!("{what}: binding 0 is not a struct");
    };
    assert_eq!(*span as usize, rust.size, "{what}: size in bytes");
    assert_eq!(
        rust.size % 16,
        0,
        "{what}: uniform size is not a multiple of 16"
    );
    // The Rust fields, in memory order, tile the struct: no implicit padding.
    let mut in_memory: Vec<&RustField> = rust.fields.iter().collect();
    in_memory.sort_by_key(|f| f.offset);
    let mut at = 0;
    for f in in_memory {
        assert_eq!(f.offset, at, "{what}: implicit padding before {}", f.name);
        at += f.size;
        assert!(
            f.kind.is_some() || f.name.starts_with('_'),
            "{what}: the array field {} must be padding (named _…)",
            f.name
        );
    }
    assert_eq!(at, rust.size, "{what}: implicit padding at the end");
    let rust_named: BTreeMap<&str, &RustField> = rust
        .fields
        .iter()
        .filter(|f| !f.name.starts_with('_'))
        .map(|f| (f.name, f))
        .collect();
    let mut wgsl_named = BTreeMap::new();
    for mem in members {
        let name = mem.name.as_deref().unwrap_or("");
        let TypeInner::Scalar(s) = m.types[mem.ty].inner else {
            panic!("{what}: member {name} is not a scalar");
        };
        assert_eq!(s.width, 4, "{what}: member {name} is not 32-bit");
        if !name.starts_with('_') {
            wgsl_named.insert(name, (mem.offset as usize, s.kind));
        }
    }
    let rust_names: BTreeSet<&str> = rust_named.keys().copied().collect();
    let wgsl_names: BTreeSet<&str> = wgsl_named.keys().copied().collect();
    assert_eq!(
        wgsl_names, rust_names,
        "{what}: field names (WGSL left, Rust right)"
    );
    for (name, f) in &rust_named {
        let (offset, kind) = wgsl_named[name];
        assert_eq!(
            offset, f.offset,
            "{what}: offset of {name} (WGSL left, Rust right)"
        );
        assert_eq!(Some(kind), f.kind, "{what}: type of {name}");
        assert_eq!(f.size, 4, "{what}: size of {name}");
    }
}

/// (override, constant name, code) of every value of every [`WgslEnum`], from the enums.
fn enum_constants() -> Vec<(&'static str, String, u32)> {
    fn of<E: WgslEnum>() -> Vec<(&'static str, String, u32)> {
        let v: Vec<_> = E::ALL
            .iter()
            .map(|e| {
                (
                    E::OVERRIDE,
                    format!("{}_{}", E::OVERRIDE, e.suffix()),
                    e.code(),
                )
            })
            .collect();
        let codes: BTreeSet<u32> = v.iter().map(|(_, _, c)| *c).collect();
        assert_eq!(
            codes.len(),
            v.len(),
            "{}: codes are not distinct",
            E::OVERRIDE
        );
        v
    }
    [
        of::<Activation>(),
        of::<GpuFamily>(),
        of::<Epilogue>(),
        of::<Prologue>(),
    ]
    .concat()
}

/// The module's `u32` constants by name.
fn wgsl_constants(m: &Module) -> HashMap<String, u32> {
    m.constants
        .iter()
        .filter_map(|(_, c)| {
            let name = c.name.clone()?;
            match m.global_expressions[c.init] {
                naga::Expression::Literal(naga::Literal::U32(v)) => Some((name, v)),
                _ => None,
            }
        })
        .collect()
}

/// WGSL tokens without comments: identifiers, numbers, `==`, `!=` and single characters.
fn tokens(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in source.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut chars = line.chars().peekable();
        while let Some(&ch) = chars.peek() {
            if ch.is_whitespace() {
                chars.next();
            } else if ch.is_alphanumeric() || ch == '_' {
                let mut t = String::new();
                while let Some(&c) = chars.peek() {
                    if !(c.is_alphanumeric() || c == '_' || c == '.') {
                        break;
                    }
                    t.push(c);
                    chars.next();
                }
                out.push(t);
            } else {
                chars.next();
                if (ch == '=' || ch == '!') && chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(format!("{ch}="));
                } else {
                    out.push(ch.to_string());
                }
            }
        }
    }
    out
}

/// An enum override (`ACT`, `FAMILY`, …) appears only in its declaration without a default,
/// compared (`==`, `!=`) with its named constants, or switched on with named cases.
fn check_no_bare_codes(shader: Shader, c: &Compiled, consts: &[(&'static str, String, u32)]) {
    let toks = tokens(&c.source);
    let overrides: BTreeSet<&str> = consts.iter().map(|(o, _, _)| *o).collect();
    for (i, t) in toks.iter().enumerate() {
        let Some(&x) = overrides.get(t.as_str()) else {
            continue;
        };
        let named = |tok: &str| consts.iter().any(|(o, n, _)| *o == x && n == tok);
        let at = format!("{}: `{x}` (token {i})", label(shader));
        let prev = |k: usize| i.checked_sub(k).map(|j| toks[j].as_str());
        let next = |k: usize| toks.get(i + k).map(String::as_str);
        if prev(1) == Some("override") {
            assert_eq!(next(1), Some(":"), "{at}");
            assert_eq!(next(3), Some(";"), "{at}: an override has no default");
        } else if matches!(next(1), Some("==" | "!=")) {
            let rhs = next(2).unwrap_or("");
            assert!(named(rhs), "{at} compared with `{rhs}`, not an {x}_* name");
        } else if matches!(prev(1), Some("==" | "!=")) {
            let lhs = prev(2).unwrap_or("");
            assert!(named(lhs), "{at} compared with `{lhs}`, not an {x}_* name");
        } else if prev(1) == Some("switch") {
            assert_eq!(next(1), Some("{"), "{at}");
            let mut depth = 0;
            let mut j = i + 1;
            loop {
                match toks[j].as_str() {
                    "{" => depth += 1,
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    "case" if depth == 1 => {
                        let mut k = j + 1;
                        while toks[k] != ":" && toks[k] != "{" {
                            let s = toks[k].as_str();
                            assert!(
                                s == "," || s == "default" || named(s),
                                "{at}: `case {s}` is not an {x}_* name"
                            );
                            k += 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        } else {
            panic!("{at} used other than in a comparison or a switch");
        }
    }
}

#[test]
fn shader_interfaces_match_the_rust_side() {
    // A new shader must be added to Shader::ALL to be checked: this match is exhaustive.
    for s in Shader::ALL {
        match s {
            Shader::Gemm(GemmTile::R4 | GemmTile::R8 | GemmTile::Narrow)
            | Shader::Activation
            | Shader::Family
            | Shader::Hessian
            | Shader::UnitStats
            | Shader::ReduceSamples
            | Shader::Backprop
            | Shader::Accumulate
            | Shader::RngTest => {}
        }
    }
    let distinct: BTreeSet<String> = Shader::ALL.iter().map(|s| label(*s)).collect();
    assert_eq!(distinct.len(), Shader::ALL.len());

    let consts = enum_constants();
    let prelude = prelude_constants();
    let mut compiled = HashMap::new();
    let mut entries = 0;
    for shader in Shader::ALL {
        let c = compile(shader);
        entries += check_bindings(shader, &c);
        check_uniform(shader, &c);
        let wgsl = wgsl_constants(&c.module);
        for (_, name, code) in &consts {
            assert_eq!(
                wgsl.get(name),
                Some(code),
                "{}: constant {name} (WGSL left, Rust enum right)",
                label(shader)
            );
        }
        for (name, value) in &prelude {
            assert_eq!(wgsl.get(name), Some(value), "{}: {name}", label(shader));
        }
        check_no_bare_codes(shader, &c, &consts);
        let overrides: BTreeSet<&str> = c
            .module
            .overrides
            .iter()
            .filter_map(|(_, o)| o.name.as_deref())
            .collect();
        let listed: BTreeSet<&str> = shader.overrides().iter().copied().collect();
        assert_eq!(
            overrides,
            listed,
            "{}: WGSL overrides (left) differ from Shader::overrides (right)",
            label(shader)
        );
        if let Shader::Gemm(tile) = shader {
            let bytes: u32 = c
                .module
                .global_variables
                .iter()
                .filter(|(_, g)| g.space == AddressSpace::WorkGroup)
                .map(|(_, g)| c.module.types[g.ty].inner.size(c.module.to_ctx()))
                .sum();
            assert_eq!(bytes, tile.workgroup_bytes(), "{}", label(shader));
        }
        compiled.insert(shader, c);
    }

    // Every pipeline the engine may create, specialised with the Rust side's override values.
    let variants = all_variants();
    for v in &variants {
        let c = &compiled[&v.shader];
        let names: BTreeSet<&str> = v.constants.iter().map(|(n, _)| *n).collect();
        let listed: BTreeSet<&str> = v.shader.overrides().iter().copied().collect();
        assert_eq!(names, listed, "{} {}", label(v.shader), v.entry);
        let mut pc = naga::back::PipelineConstants::default();
        for (n, x) in &v.constants {
            pc.insert((*n).to_string(), *x);
        }
        naga::back::pipeline_constants::process_overrides(
            &c.module,
            &c.info,
            Some((naga::ShaderStage::Compute, v.entry)),
            &pc,
        )
        .unwrap_or_else(|e| {
            panic!(
                "{} {} with {:?}: {e}",
                label(v.shader),
                v.entry,
                v.constants
            )
        });
    }
    eprintln!(
        "{} shader modules, {entries} entry points, {} uniform structs, {} enum constants, \
         {} pipeline variants checked",
        Shader::ALL.len(),
        Shader::ALL.len(),
        consts.len(),
        variants.len()
    );
}

/// The check fails on drift: a WGSL struct with two fields swapped is caught.
#[test]
#[should_panic(expected = "offset of")]
fn a_swapped_uniform_field_is_caught() {
    let shader = Shader::Hessian;
    let mut c = compile(shader);
    let (h, _) = wgsl_bindings(shader, &c.module)[&0];
    let ty = c.module.global_variables[h].ty;
    let mut t = c.module.types[ty].clone();
    if let TypeInner::Struct { members, .. } = &mut t.inner {
        let (a, b) = (members[0].offset, members[1].offset);
        members[0].offset = b;
        members[1].offset = a;
    }
    let new = c.module.types.insert(t, naga::Span::UNDEFINED);
    c.module.global_variables[h].ty = new;
    check_uniform(shader, &c);
}

/// A bare number compared with an enum override is caught.
#[test]
#[should_panic(expected = "not an FAMILY_* name")]
fn a_bare_code_is_caught() {
    let mut c = compile(Shader::UnitStats);
    c.source = c
        .source
        .replace("FAMILY == FAMILY_CATEGORICAL", "FAMILY == 0u");
    check_no_bare_codes(Shader::UnitStats, &c, &enum_constants());
}
