// Secrets through the JS SDK: Secret.create (a second of the same name refused), getInfo by id
// and by name, exists, list (paged), update (a new version; metadata replaced), destroy (then
// gone: a second destroy is false, getInfo rejects with SecretNotFoundError). Values never come
// back.

import { Secret, SecretError, SecretNotFoundError } from 'e2b'
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

await step('Secret.destroy', async () => {
  check((await Secret.destroy(s.secretId)) === true, 'destroyed')
  check((await Secret.destroy(s.secretId)) === false, 'a second destroy is false')
  await rejects(SecretNotFoundError, () => Secret.getInfo(name), 'the destroyed secret')
})
