// useLoad runs fn now and on reload(), keeping the states a page shows: pending, error, data.
export function useLoad<T>(fn: () => Promise<T>) {
  const data = shallowRef<T>()
  const pending = ref(true)
  const error = shallowRef<Error | null>(null)
  async function reload(quiet = false) {
    if (!quiet) pending.value = true
    error.value = null
    try {
      data.value = await fn()
    }
    catch (e) {
      error.value = e instanceof Error ? e : new Error(String(e))
    }
    finally {
      pending.value = false
    }
  }
  onMounted(() => reload())
  return { data, pending, error, reload }
}
