// Secrets through the JS SDK: Secret.create (a second of the same name refused), getInfo by id
// and by name, exists, list (paged), update (a new version; metadata replaced), destroy (then
// gone: a second destroy is false, getInfo rejects with SecretNotFoundError). Values never come
// back. A sandbox's network rules put the secret into request headers (Secret.fill): getInfo
// shows them as given, updateNetwork replaces them, an unknown secret is refused, and the secret
// cannot be destroyed while a rule uses it.

import { Sandbox, SandboxError, Secret, SecretError, SecretNotFoundError } from 'e2b'
import { check, rejects, step, tag } from './common.mjs'

const label = tag()
const name = `sec-ts-${label}`.toLowerCase()
const VALUE = `sk-e2b-eval-ts-${label}`
let s

await step('Secret.create', async () => {
  s = await Secret.create(name, VALUE, { metadata: { team: 'a' } })
  check(s.name === name && s.secretId.startsWith('sec_') && s.version === 1, `created ${JSON.stringify(s)}`)
  check(JSON.stringify(s.metadata) === '{"team":"a"}', 'metadata')
  await rejects(SecretError, () => Secret.create(name, 'x'), 'a second secret of the same name')
})

await step('Secret.getInfo / exists / list', async () => {
  check((await Secret.getInfo(s.secretId)).name === name, 'getInfo by id')
  check((await Secret.getInfo(name)).secretId === s.secretId, 'getInfo by name')
  check((await Secret.exists(name)) && !(await Secret.exists(`nope-${label}`)), 'exists')
  const pages = Secret.list({ limit: 1 })
  const seen = []
  while (pages.hasNext) seen.push(...(await pages.nextItems()).map((x) => x.secretId))
  check(seen.includes(s.secretId), `listed one per page: ${seen.length}`)
  check(!JSON.stringify(await Secret.getInfo(name)).includes(VALUE), 'the value never comes back')
})

await step('Secret.update', async () => {
  const u = await Secret.update(name, `${VALUE}-2`, { metadata: { team: 'b' } })
  check(u.version === 2 && JSON.stringify(u.metadata) === '{"team":"b"}', `updated ${JSON.stringify(u)}`)
  await rejects(SecretNotFoundError, () => Secret.update(`nope-${label}`, 'x'), 'updating no secret')
})

await step('network rules with Secret.fill: create, getInfo, updateNetwork; destroy refused while used', async () => {
  const headers = { Authorization: `Bearer ${Secret.fill(name)}` }
  const sbx = await Sandbox.create({
    timeoutMs: 120_000,
    network: { allowOut: ['api.example.com'], rules: { 'api.example.com': [{ transform: { headers } }] } },
  })
  try {
    const net = (await sbx.getInfo()).network
    check(JSON.stringify(net.rules['api.example.com'][0].transform.headers) === JSON.stringify(headers), `rules ${JSON.stringify(net)}`)
    await rejects(SecretError, () => Secret.destroy(s.secretId), 'destroying a secret a rule uses')
    const unknown = { '*.example.org': [{ transform: { headers: { 'X-Key': Secret.fill(`nope-${label}`) } } }] }
    await rejects(SandboxError, () => sbx.updateNetwork({ rules: unknown }), 'a rule with no such secret')
    await sbx.updateNetwork({ rules: { '*.example.org': [{ transform: { headers: { 'X-Key': Secret.fill(name) } } }] } })
    check(Object.keys((await sbx.getInfo()).network.rules).join() === '*.example.org', 'rules replaced')
    await sbx.updateNetwork({})
    check(Object.keys((await sbx.getInfo()).network.rules ?? {}).length === 0, 'rules cleared')
  } finally {
    await sbx.kill()
  }
})

await step('Secret.destroy', async () => {
  check((await Secret.destroy(s.secretId)) === true, 'destroyed')
  check((await Secret.destroy(s.secretId)) === false, 'a second destroy is false')
  await rejects(SecretNotFoundError, () => Secret.getInfo(name), 'the destroyed secret')
})
