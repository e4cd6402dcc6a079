package cache

import (
	"errors"
	"path/filepath"
	"sync"
)

// One process keeps one Budget per root for the Files that ask for it by
// Options.Limits; it is opened by the first such Open and closed with the
// last such File. The options of the first Open win.
var shared struct {
	mu    sync.Mutex
	roots map[string]*sharedBudget
}

type sharedBudget struct {
	b    *Budget
	refs int
}

func acquireBudget(root string, o BudgetOptions) (*Budget, error) {
	if root == "" {
		return nil, errors.New("cache: Options.Limits needs Options.Root")
	}
	key := filepath.Clean(root)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if s := shared.roots[key]; s != nil {
		s.refs++
		return s.b, nil
	}
	b, err := NewBudget(key, o)
	if err != nil {
		return nil, err
	}
	if shared.roots == nil {
		shared.roots = map[string]*sharedBudget{}
	}
	shared.roots[key] = &sharedBudget{b: b, refs: 1}
	return b, nil
}

func releaseBudget(b *Budget) error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	key := filepath.Clean(b.root)
	s := shared.roots[key]
	if s == nil || s.b != b {
		return nil
	}
	if s.refs--; s.refs > 0 {
		return nil
	}
	delete(shared.roots, key)
	return b.Close()
}

// ProcessBudgets returns the Budgets this process holds through
// Options.Limits, for status reports.
func ProcessBudgets() []*Budget {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var out []*Budget
	for _, s := range shared.roots {
		out = append(out, s.b)
	}
	return out
}
