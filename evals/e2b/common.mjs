// Helpers shared by the JS E2B SDK conformance flows. The flows are ordinary user code: the
// official `e2b` / `@e2b/code-interpreter` packages configured only through the environment
// (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY), as run.sh sets it up. A flow exits non-zero on
// the first failed check.

import { randomUUID } from 'node:crypto'
import path from 'node:path'

export function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`)
}

export async function rejects(ErrorClass, fn, what) {
  try {
    const result = await fn()
    throw new Error(`${what}: expected ${ErrorClass.name}, got result ${JSON.stringify(result)}`)
  } catch (e) {
    if (e instanceof ErrorClass) return e
    if (e instanceof Error && e.message.startsWith(`${what}: expected`)) throw e
    throw new Error(`${what}: expected ${ErrorClass.name}, got ${e?.constructor?.name}: ${e?.message}`)
  }
}

export async function waitUntil(condition, what, timeoutMs = 30_000, everyMs = 500) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await condition()) return
    await new Promise((r) => setTimeout(r, everyMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}

export async function step(name, fn) {
  const started = Date.now()
  try {
    const result = await fn()
    console.log(`  ok ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`)
    return result
  } catch (e) {
    console.error(`  FAILED in step '${name}'`)
    throw e
  }
}

export function tag() {
  return `${path.basename(process.argv[1]).split('.')[0]}-${randomUUID().slice(0, 8)}`
}

export function uploadLimit() {
  const v = process.env.E2B_FLOW_UPLOAD_LIMIT
  return v ? Number(v) : null
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
