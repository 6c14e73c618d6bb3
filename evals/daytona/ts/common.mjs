// Shared setup for the Daytona SDK conformance flows (TypeScript, Node).
//
// The flows drive the unmodified @daytonaio/sdk against a Platinum server configured the way a
// Daytona user configures it: DAYTONA_API_URL and DAYTONA_API_KEY in the process environment.
// The SDK is loaded from DAYTONA_SDK_NODE_MODULES (the runner's npm prefix), so nothing is
// installed into the repository.
import { createRequire } from 'node:module'
import path from 'node:path'

const modules = process.env.DAYTONA_SDK_NODE_MODULES
if (!modules) throw new Error('set DAYTONA_SDK_NODE_MODULES to the node_modules holding @daytonaio/sdk')
const require = createRequire(path.join(modules, 'noop.js'))
export const sdk = require('@daytonaio/sdk')

export function client() {
  // No explicit config: apiUrl, apiKey and target come from the environment, as for users.
  return new sdk.Daytona()
}

// Deletes the sandboxes a flow made; ones already gone are fine.
export async function deleteAll(d, sandboxes) {
  for (const s of sandboxes) {
    try {
      await d.delete(s)
    } catch (e) {
      if (!(e instanceof sdk.DaytonaNotFoundError)) throw e
    }
  }
}

export function check(cond, what, detail) {
  if (!cond) throw new Error(detail === undefined ? what : `${what}: ${JSON.stringify(detail)}`)
}

export async function expectError(fn, cls, what, code) {
  try {
    await fn()
  } catch (e) {
    if (!(e instanceof cls)) throw new Error(`${what}: expected ${cls.name}, got ${e?.constructor?.name}: ${e?.message}`)
    if (code !== undefined && e.code !== code && e.errorCode !== code) {
      throw new Error(`${what}: expected code ${code}, got ${e.code ?? e.errorCode}: ${e.message}`)
    }
    return e
  }
  throw new Error(`${what}: expected ${cls.name}, nothing was thrown`)
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

export async function run(flow, body) {
  const started = Date.now()
  try {
    await body()
  } catch (e) {
    console.log(`FAIL ${flow}`)
    console.error(e)
    process.exit(1)
  }
  console.log(`PASS ${flow} (${((Date.now() - started) / 1000).toFixed(1)}s)`)
  // The SDK keeps a notification socket retrying in the background; leave without waiting for it.
  process.exit(0)
}
