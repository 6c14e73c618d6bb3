// Quick start: create, codeRun, executeCommand (exit codes, cwd, env, timeout), directories,
// get by id and name, delete.
import { check, client, expectError, run, sdk } from './common.mjs'

await run('typescript quickstart', async () => {
  const d = client()
  const name = `ts-qs-${Date.now()}`
  const s = await d.create({ name, labels: { flow: 'quickstart' } })
  try {
    check(s.state === 'started' && s.name === name, 'create returns started', [s.state, s.name])
    let r = await s.process.codeRun('import sys\nprint(6*7)\nprint(sys.argv[1:])', { argv: ['x'] })
    check(r.exitCode === 0 && r.result === "42\n['x']\n", 'codeRun', r)
    r = await s.process.executeCommand('echo hello; echo err 1>&2; exit 3')
    check(r.exitCode === 3 && r.result === 'hello\nerr\n', 'executeCommand', r)
    r = await s.process.executeCommand('pwd; echo $V', '/tmp', { V: 'v' })
    check(r.result === '/tmp\nv\n', 'cwd and env', r)
    const late = await expectError(() => s.process.executeCommand('sleep 30', undefined, undefined, 2), sdk.DaytonaTimeoutError, 'timeout')
    check(/timeout/i.test(late.message), "the timeout's message says timeout", late.message)
    check((await s.getUserHomeDir()) === '/home/user' && (await s.getWorkDir()) === '/home/user', 'directories')
    check((await d.get(name)).id === s.id && (await d.get(s.id)).name === name, 'get by name and id')
  } finally {
    await d.delete(s)
  }
  await expectError(() => d.get(s.id), sdk.DaytonaNotFoundError, 'deleted')
  await expectError(() => d.get('no-such-sandbox'), sdk.DaytonaNotFoundError, 'unknown sandbox')
  const bad = new sdk.Daytona({ apiKey: 'wrong', apiUrl: process.env.DAYTONA_API_URL, target: 'local' })
  await expectError(() => bad.get('x'), sdk.DaytonaAuthenticationError, 'wrong key')
})
