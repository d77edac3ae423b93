// An assistant's graph (GET /assistants/{id}/graph) drawn as rows: each node one row below the
// nodes that lead to it, edges as lines; conditional edges dashed.

const ROW = 56;
const WIDTH = 130;
const GAP = 16;

function rank(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  // Longest path from the start, bounded so a cycle cannot loop forever.
  for (let pass = 0; pass < nodes.length; pass++) {
    let moved = false;
    for (const e of edges) {
      if (e.source === e.target) continue;
      const d = (depth.get(e.source) ?? 0) + 1;
      if (d > (depth.get(e.target) ?? 0) && d < nodes.length) {
        depth.set(e.target, d);
        moved = true;
      }
    }
    if (!moved) break;
  }
  return depth;
}

export function GraphView({ graph }) {
  if (!graph) return null;
  const nodes = graph.nodes || [];
  const edges = graph.edges || [];
  const depth = rank(nodes, edges);
  const rows = [];
  for (const n of nodes) {
    const d = depth.get(n.id);
    (rows[d] ||= []).push(n.id);
  }
  const widest = Math.max(1, ...rows.map((r) => (r ? r.length : 0)));
  const width = widest * (WIDTH + GAP) + GAP;
  const at = new Map();
  rows.forEach((ids, d) => {
    const offset = (width - ids.length * (WIDTH + GAP) + GAP) / 2;
    ids.forEach((id, i) => at.set(id, { x: offset + i * (WIDTH + GAP), y: GAP + d * ROW }));
  });
  const height = rows.length * ROW + GAP;
  return (
    <svg id="graph" class="graph" width={width} height={height} viewBox={`0 0 ${width} ${height}`}>
      {edges.map((e) => {
        const a = at.get(e.source);
        const b = at.get(e.target);
        if (!a || !b) return null;
        return (
          <line
            class={e.conditional ? "edge conditional" : "edge"}
            x1={a.x + WIDTH / 2} y1={a.y + 28} x2={b.x + WIDTH / 2} y2={b.y}
          />
        );
      })}
      {nodes.map((n) => {
        const p = at.get(n.id);
        return (
          <g class="node" data-node={n.id} transform={`translate(${p.x},${p.y})`}>
            <rect width={WIDTH} height={28} rx={6} />
            <text x={WIDTH / 2} y={18} text-anchor="middle">{n.id}</text>
          </g>
        );
      })}
    </svg>
  );
}
