// Control plane: list with label and state filters and cursor paging, labels, intervals, stop,
// start, archive, preview links into the sandbox, images, snapshots, volumes.
import { check, client, expectError, run, sdk, sleep } from './common.mjs'

await run('typescript lifecycle', async () => {
  const d = client()
  const tag = `t${Date.now()}`
  const a = await d.create({ labels: { suite: tag }, autoStopInterval: 0 })
  const b = await d.create({ image: 'debian:12', labels: { suite: tag } })
  try {
    const ids = []
    for await (const s of d.list({ labels: { suite: tag }, limit: 1 })) ids.push(s.id)
    check(ids.sort().join() === [a.id, b.id].sort().join(), 'list pages', ids)
    const labels = await a.setLabels({ suite: tag, x: '1' })
    check(labels.x === '1', 'setLabels', labels)
    await a.setAutostopInterval(30)
    await a.setAutoArchiveInterval(60)
    await a.setAutoDeleteInterval(-1)
    await a.refreshData()
    check(a.autoStopInterval === 30 && a.autoArchiveInterval === 60 && a.autoDeleteInterval === -1, 'intervals', [a.autoStopInterval, a.autoArchiveInterval, a.autoDeleteInterval])
    await a.stop()
    check(a.state === 'stopped', 'stop', a.state)
    const stopped = []
    for await (const s of d.list({ labels: { suite: tag }, states: ['stopped'] })) stopped.push(s.id)
    check(stopped.join() === a.id, 'state filter', stopped)
    await a.archive()
    await a.refreshData()
    check(a.state === 'archived', 'archive', a.state)
    await a.start()
    check(a.state === 'started', 'start from archived', a.state)

    await a.process.createSession('web')
    await a.process.executeSessionCommand('web', { command: 'cd /tmp && echo hi-ts > p.txt && python3 -m http.server 8001', runAsync: true })
    const link = await a.getPreviewLink(8001)
    let text = ''
    for (let i = 0; i < 60 && text !== 'hi-ts\n'; i++) {
      const r = await fetch(`${link.url}/p.txt`, { headers: { 'X-Daytona-Preview-Token': link.token } })
      text = r.ok ? await r.text() : ''
      if (!r.ok) await sleep(500)
    }
    check(text === 'hi-ts\n', 'preview link', text)

    await expectError(() => d.create({ image: 'alpine:3.20' }), sdk.DaytonaBadRequestError, 'unbuildable image')
    const snaps = await d.snapshot.list()
    check(snaps.items.some((x) => x.name === 'base'), 'snapshots', snaps)
    check((await d.volume.list()).length === 0, 'volumes')
  } finally {
    await d.delete(a)
    await d.delete(b)
  }
})
