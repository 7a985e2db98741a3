// The public API, typed from its OpenAPI document (app/types/api.d.ts, generated: npm run types).
// Same origin: the browser sends the session cookie; nothing here holds a credential.
import type { components } from '~/types/api'

export type Schemas = components['schemas']
export type User = Schemas['User']
export type Project = Schemas['Project']
export type Deployment = Schemas['Deployment']
export type LogLine = Schemas['LogLine']
export type Instance = Schemas['Instance']
export type Domain = Schemas['Domain']
export type EnvVariable = Schemas['EnvVariable']
export type Token = Schemas['Token']
export type Session = Schemas['Session']
export type Installation = Schemas['Installation']
export type Repository = Schemas['GitHubRepository']

// ApiError is a problem+json answer (or a network failure, status 0).
export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message)
  }
}

export async function api<T>(path: string, opts: { method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', query?: Record<string, string | number | undefined>, body?: unknown } = {}): Promise<T> {
  try {
    return await $fetch<T>(path, { ...opts, credentials: 'same-origin' } as object) as T
  }
  catch (e: unknown) {
    const err = e as { status?: number, statusCode?: number, data?: { detail?: string, title?: string }, message?: string }
    const status = err.status ?? err.statusCode ?? 0
    throw new ApiError(status, err.data?.detail || err.data?.title || (status ? `HTTP ${status}` : 'the API cannot be reached'))
  }
}

// useMe is the signed-in user, loaded once per page load; null when nobody is signed in.
export function useMe() {
  return useState<User | null | undefined>('me', () => undefined)
}

export async function loadMe(): Promise<User | null> {
  const me = useMe()
  if (me.value !== undefined) return me.value
  try {
    me.value = await api<User>('/v1/me')
  }
  catch (e) {
    if (e instanceof ApiError && e.status === 401) me.value = null
    else throw e
  }
  return me.value
}

const live = new Set(['queued', 'building', 'deploying'])
export function isLive(status: string) {
  return live.has(status)
}

export function statusColor(status: string): 'success' | 'error' | 'warning' | 'info' | 'neutral' {
  switch (status) {
    case 'active': return 'success'
    case 'failed': return 'error'
    case 'queued': case 'building': case 'deploying': return 'info'
    case 'retiring': return 'warning'
    default: return 'neutral'
  }
}

export function ago(iso?: string | null): string {
  if (!iso) return ''
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000)
  if (s < 60) return `${Math.floor(s)}s ago`
  if (s < 3600) return `${Math.floor(s / 60)}m ago`
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`
  return `${Math.floor(s / 86400)}d ago`
}

// duration is how long a deployment took to go live, or has been on its way so far.
export function duration(d: Deployment): string {
  const start = new Date(d.created_at).getTime()
  let end: number
  if (d.active_at) end = new Date(d.active_at).getTime()
  else if (isLive(d.status)) end = Date.now()
  else return ''
  const s = Math.max(0, Math.round((end - start) / 1000))
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${s % 60}s`
}

// errorText is what a failed call shows the user.
export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}

// shortId names a row in little space: the tail of a UUIDv7, because its head is a timestamp
// that rows made together share.
export function shortId(id?: string | null): string {
  return id ? id.slice(-8) : ''
}
