/** @module Light and dark themes: the system's choice by default, or the user's, kept in localStorage. */
type Theme = "system" | "light" | "dark";
const KEY = "parley-theme";
const ORDER: Theme[] = ["system", "light", "dark"];

export function currentTheme(): Theme {
  const saved = localStorage.getItem(KEY);
  return saved === "light" || saved === "dark" ? saved : "system";
}

export function applyTheme(theme = currentTheme()): void {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

export function cycleTheme(): void {
  const next = ORDER[(ORDER.indexOf(currentTheme()) + 1) % ORDER.length] as Theme;
  if (next === "system") localStorage.removeItem(KEY);
  else localStorage.setItem(KEY, next);
  applyTheme(next);
}

export function themeLabel(): string {
  return { system: "◐ System", light: "☀ Light", dark: "☾ Dark" }[currentTheme()];
}
