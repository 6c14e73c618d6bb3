// Stateful code interpreter: default context state, created contexts, errors, timeout.
import { check, client, expectError, run, sdk } from './common.mjs'

await run('typescript interpreter', async () => {
  const d = client()
  const s = await d.create()
  try {
    const ci = s.codeInterpreter
    await ci.runCode('v = [1, 2, 3]')
    let r = await ci.runCode('print(sum(v))')
    check(r.stdout === '6\n' && !r.error, 'state kept', r)
    r = await ci.runCode('raise ValueError("bad")')
    check(r.error?.name === 'ValueError' && r.error?.value === 'bad', 'error', r.error)
    const ctx = await ci.createContext('/tmp')
    r = await ci.runCode('import os; print(os.getcwd())', { context: ctx })
    check(r.stdout === '/tmp\n', 'context', r)
    await expectError(() => ci.runCode('import time; time.sleep(30)', { timeout: 2 }), sdk.DaytonaTimeoutError, 'timeout')
    await ci.deleteContext(ctx)
    check(!(await ci.listContexts()).some((c) => c.id === ctx.id), 'deleted')
  } finally {
    await d.delete(s)
  }
})
