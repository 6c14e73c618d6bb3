// Two clients on one sandbox at once (two SDK instances): commands, files and code runs
// interleave and each client gets its own results.

import { Sandbox } from '@e2b/code-interpreter'
import { check, step } from './common.mjs'

const first = await Sandbox.create({ timeoutMs: 300_000 })
try {
  const second = await Sandbox.connect(first.sandboxId)
  await step('two clients interleave', async () => {
    const client = async (n, sbx) => {
      for (let i = 0; i < 5; i++) {
        const r = await sbx.commands.run(`echo client${n}-${i}; sleep 0.2`)
        check(r.stdout === `client${n}-${i}\n`, `client ${n}: ${r.stdout}`)
        await sbx.files.write(`/home/user/c${n}/f${i}.txt`, `${n}:${i}`.repeat(1000))
        check((await sbx.files.read(`/home/user/c${n}/f${i}.txt`)) === `${n}:${i}`.repeat(1000), 'file')
      }
      const ctx = await sbx.createCodeContext()
      await sbx.runCode(`mine = ${n}`, { context: ctx })
      check((await sbx.runCode('mine', { context: ctx })).text === String(n), `client ${n} context`)
      return n
    }
    const results = await Promise.all([client(1, first), client(2, second), client(3, first), client(4, second)])
    check(JSON.stringify(results) === '[1,2,3,4]', JSON.stringify(results))
  })
} finally {
  await first.kill()
}
