// The code interpreter through @e2b/code-interpreter: stateful runs, callbacks, errors, rich
// results (matplotlib PNG), per-run envs, contexts (create, list, restart, remove) and
// JavaScript.

import { Sandbox } from '@e2b/code-interpreter'
import { check, step } from './common.mjs'

const sbx = await Sandbox.create({ timeoutMs: 600_000 })
try {
  await step('state survives between runs', async () => {
    await sbx.runCode('x = 41')
    const ex = await sbx.runCode('x + 1')
    check(ex.text === '42' && ex.results[0].isMainResult, JSON.stringify(ex))
  })

  await step('stdout and stderr callbacks', async () => {
    const out = []
    const err = []
    const ex = await sbx.runCode("import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)", {
      onStdout: (m) => out.push(m.line),
      onStderr: (m) => err.push(m.line),
    })
    check(ex.logs.stdout.join('') === 'to stdout\n' && ex.logs.stderr.join('') === 'to stderr\n', JSON.stringify(ex.logs))
    check(out.join('') === 'to stdout\n' && err.join('') === 'to stderr\n', 'callbacks')
  })

  await step('errors', async () => {
    const ex = await sbx.runCode('1 / 0')
    check(ex.error?.name === 'ZeroDivisionError' && ex.error.value === 'division by zero', JSON.stringify(ex.error))
    check(ex.error.traceback.includes('1 / 0'), ex.error.traceback)
  })

  await step('matplotlib PNG', async () => {
    const ex = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()')
    const png = ex.results.find((r) => r.png)?.png
    check(png && Buffer.from(png, 'base64').subarray(0, 4).toString('hex') === '89504e47', 'a PNG')
  })

  await step('envs per run', async () => {
    const ex = await sbx.runCode("import os; os.environ.get('RUN_ONLY')", { envs: { RUN_ONLY: 'yes' } })
    check(ex.text === 'yes', ex.text)
  })

  await step('contexts', async () => {
    const ctx = await sbx.createCodeContext({ cwd: '/tmp' })
    check(ctx.cwd === '/tmp' && ctx.language === 'python', JSON.stringify(ctx))
    check((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text === '/tmp', 'cwd')
    await sbx.runCode('y = 5', { context: ctx })
    check((await sbx.listCodeContexts()).some((c) => c.id === ctx.id), 'listed')
    await sbx.restartCodeContext(ctx)
    check((await sbx.runCode('y', { context: ctx })).error?.name === 'NameError', 'restart cleared state')
    await sbx.removeCodeContext(ctx)
    check(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id), 'removed')
  })

  await step('JavaScript', async () => {
    const ex = await sbx.runCode("const greeting = 'hi'; console.log(greeting); 6 * 7", { language: 'javascript' })
    check(ex.text === '42' && ex.logs.stdout.join('') === 'hi\n', JSON.stringify(ex))
    check((await sbx.runCode('greeting.toUpperCase()', { language: 'javascript' })).text === 'HI', 'JS state')
  })
} finally {
  await sbx.kill()
}
