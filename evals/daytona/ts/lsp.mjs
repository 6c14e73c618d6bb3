// Language servers through the TypeScript SDK, with typescript-language-server running in the
// sandbox: createLspServer, start, didOpen, documentSymbols, sandboxSymbols (and the deprecated
// workspaceSymbols), completions, didClose, stop. (The Python SDK's flow drives pylsp.)
import { check, client, expectError, run, sdk } from './common.mjs'

const TS = `export interface Shape { area(): number }

export class Circle implements Shape {
  constructor(private r: number) {}
  area(): number { return Math.PI * this.r * this.r }
}

export function biggest(shapes: Shape[]): Shape { return shapes[0] }

const c = new Circle(2)
c.
`

await run('typescript lsp', async () => {
  const d = client()
  const s = await d.create()
  try {
    await s.fs.createFolder('/home/user/proj', '755')
    await s.fs.uploadFile(Buffer.from(TS), '/home/user/proj/shapes.ts')
    const ts = await s.createLspServer('typescript', '/home/user/proj')
    await ts.start()
    await ts.didOpen('/home/user/proj/shapes.ts')
    const symbols = await ts.documentSymbols('/home/user/proj/shapes.ts')
    const has = (name, kind) => symbols.some((x) => x.name === name && x.kind === kind)
    check(has('Circle', 5) && has('biggest', 12) && has('Shape', 11), 'document symbols', symbols.map((x) => [x.name, x.kind]))
    const done = await ts.completions('/home/user/proj/shapes.ts', { line: 10, character: 2 })
    check(done.items.some((i) => i.label === 'area'), 'completions after `c.`', done.items.slice(0, 10).map((i) => i.label))
    const found = await ts.sandboxSymbols('Circle')
    check(found.some((x) => x.name === 'Circle' && x.location.uri.endsWith('/proj/shapes.ts')), 'sandbox symbols', found)
    check((await ts.workspaceSymbols('biggest')).some((x) => x.name === 'biggest'), 'workspaceSymbols')
    await ts.didClose('/home/user/proj/shapes.ts')
    await ts.stop()
    await expectError(() => ts.documentSymbols('/home/user/proj/shapes.ts'), sdk.DaytonaError, 'stopped server')
    const left = (await s.process.executeCommand("pgrep -f '[t]ypescript-language-server' || true")).result.trim()
    check(left === '', 'no language server left running', left)
  } finally {
    await d.delete(s)
  }
})
