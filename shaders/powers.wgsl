// Layer-input powers for the accumulation GEMMs (DESIGN §1): a2[x, k] = a_k², a4 = a_k⁴, with
// an extra column k = n_in of ones for the bias.

struct Params { bb: u32, n_in: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> act: array<f32>;
@group(0) @binding(2) var<storage, read_write> a2: array<f32>;
@group(0) @binding(3) var<storage, read_write> a4: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let cols = p.n_in + 1u;
    if (i >= p.bb * cols) { return; }
    let x = i / cols;
    let k = i % cols;
    var v = 1.0;
    if (k < p.n_in) { v = act[x * p.n_in + k]; }
    let v2 = v * v;
    a2[i] = v2;
    a4[i] = v2 * v2;
}
