// Secrets through the TypeScript SDK: daytona.secret.create (the answer has a placeholder, never
// the value; a second one of the same name is a conflict), list (paged, filtered by name), get,
// update (hosts and value; the value is never answered), a sandbox created with
// secrets: { ENV: name } sees the placeholder, never the value, in its environment; the secret
// cannot be deleted while that sandbox holds it; updateSecrets replaces the sandbox's variables,
// and once it detached them all the secret can be deleted.
import { check, client, deleteAll, expectError, run, sdk } from './common.mjs'

const VALUE = `sk-eval-${Date.now()}-${Math.random().toString(16).slice(2)}`

await run('typescript egress_secrets', async () => {
  const d = client()
  const name = `sec-ts-${Date.now()}`
  let s = await d.secret.create({ name, value: VALUE, hosts: ['api.example.com'] })
  check(s.name === name && JSON.stringify(s.hosts) === '["api.example.com"]', 'secret.create', s)
  check(s.placeholder && !JSON.stringify(s).includes(VALUE), 'the placeholder, never the value', s)
  await expectError(() => d.secret.create({ name, value: 'x' }), sdk.DaytonaConflictError, 'a taken name')
  const page = await d.secret.list({ limit: 50, name })
  check(page.items.length === 1 && page.items[0].id === s.id && page.total === 1, 'secret.list by name', page)
  check((await d.secret.get(s.id)).placeholder === s.placeholder, 'secret.get')
  const u = await d.secret.update(s.id, { hosts: ['*.example.com'], value: `${VALUE}-2` })
  check(JSON.stringify(u.hosts) === '["*.example.com"]' && !JSON.stringify(u).includes(VALUE), 'secret.update', u)
  const made = []
  try {
    const sb = await d.create({ secrets: { API_TOKEN: name } })
    made.push(sb)
    const r = await sb.process.executeCommand('printenv API_TOKEN; env | grep -c sk-eval- || true')
    const lines = r.result.trim().split(/\s+/)
    check(lines[0] === s.placeholder && lines.at(-1) === '0', 'the sandbox holds the placeholder only', r.result)
    await expectError(() => d.secret.delete(s.id), sdk.DaytonaConflictError, 'deleting a secret a sandbox holds')
    await sb.updateSecrets({ OTHER_TOKEN: name })
    const after = await sb.process.executeCommand('printenv OTHER_TOKEN; printenv API_TOKEN || echo gone')
    check(JSON.stringify(after.result.trim().split(/\s+/)) === JSON.stringify([s.placeholder, 'gone']),
      'updateSecrets replaces the variables', after.result)
    await sb.updateSecrets({})
    await d.secret.delete(s.id)
    await expectError(() => d.secret.get(s.id), sdk.DaytonaNotFoundError, 'the deleted secret')
    s = null
  } finally {
    await deleteAll(d, made)
    if (s) await d.secret.delete(s.id)
  }
})
