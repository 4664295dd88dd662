// Named wall-clock laps for a result's `timings` section (seconds).
export function lapTimer(): { timings: Record<string, number>; lap: (name: string) => void } {
  const timings: Record<string, number> = {};
  let t = performance.now();
  return {
    timings,
    lap: (name) => {
      const now = performance.now();
      timings[name] = (now - t) / 1000;
      t = now;
    },
  };
}
