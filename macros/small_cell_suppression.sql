{#- Small-cell suppression for the public layer (models/marts/public).

    A count from 1 to threshold - 1 could identify a patient; it is masked (primary). Masking
    it alone is not enough: a reader who knows a total and all its parts but one subtracts.
    The totals a reader can take are listed, as groups of cells, in
    int_suppression_equations (parent and children org units, a period and the finer periods
    that roll into it, a data element over its disaggregations). hp_complete_masking then
    masks complementary cells until no group has exactly one masked cell:

        repeat
            for each group touched by the cells masked in the last round
                that has exactly one masked cell:
                mask its smallest unmasked non-zero cell (a zero only when no other
                is left; ties: the lower cell_id)
        until a round masks nothing

    Masking a cell in one direction can leave a lone masked cell in another (a week masked
    for its district leaves its month with one), hence the rounds; each only looks at the
    groups the previous round touched, so a round costs what changed, not the whole table.
    This is the usual greedy heuristic, not the least-loss solution (an integer programme):
    it may mask more than needed, never less. A zero complement is a poor one (the masked
    pair then adds up to the small count itself), so zeros are taken last. -#}
{% macro hp_small_cell_threshold() -%}
    {{ return(var('healthpipe_small_cell_threshold')) }}
{%- endmacro %}

{#- Runs from int_suppression_masks' post-hook: the rounds are statements run one after the
    other, so the hook itself renders no SQL of its own. A fixpoint not reached within
    max_rounds fails the build. -#}
{% macro hp_complete_masking(masks, equations, max_rounds=100) %}
    {%- if execute -%}
        {%- set state = namespace(last_added=1, rounds=0) -%}
        {%- for round in range(1, max_rounds + 1) -%}
            {%- if state.last_added > 0 -%}
                {%- call statement('hp_masking_round') -%}
                    update {{ masks }} set is_masked = true, masked_round = {{ round }}
                    where cell_id in (
                        select cell_id
                        from (
                            select
                                e.cell_id,
                                row_number() over (
                                    partition by e.group_id
                                    order by case when m.cell_value = 0 then 1 else 0 end,
                                        m.cell_value, e.cell_id
                                ) as candidate_rank
                            from {{ equations }} as e
                            join {{ masks }} as m on m.cell_id = e.cell_id
                            where not m.is_masked
                              and e.group_id in (
                                  select g.group_id
                                  from {{ equations }} as g
                                  join {{ masks }} as gm on gm.cell_id = g.cell_id
                                  where g.group_id in (
                                      select t.group_id
                                      from {{ equations }} as t
                                      join {{ masks }} as tm on tm.cell_id = t.cell_id
                                      where tm.masked_round = {{ round - 1 }}
                                  )
                                  group by g.group_id
                                  having sum(case when gm.is_masked then 1 else 0 end) = 1
                              )
                        ) as candidates
                        where candidate_rank = 1
                    )
                {%- endcall -%}
                {%- set added = run_query(
                    "select count(*) from " ~ masks ~ " where masked_round = " ~ round
                ).columns[0].values()[0] -%}
                {%- set state.last_added = added -%}
                {%- set state.rounds = round -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if state.last_added > 0 -%}
            {{ exceptions.raise_compiler_error(
                "small-cell suppression: complementary masking still changed cells after "
                ~ max_rounds ~ " rounds in " ~ masks) }}
        {%- endif -%}
        {{ log("small-cell suppression: complementary masking settled after " ~ state.rounds ~ " rounds", info=false) }}
    {%- endif -%}
{% endmacro %}

{#- Fresh statistics for a table a later statement joins heavily (PostgreSQL plans a table
    it has never analysed as tiny). -#}
{% macro hp_analyze(relation) -%}
    {{ return(adapter.dispatch('hp_analyze', 'healthpipe')(relation)) }}
{%- endmacro %}

{% macro default__hp_analyze(relation) -%}
    analyze {{ relation }}
{%- endmacro %}

{#- The mask of every cell of one public table, keyed as in int_suppression_cells. -#}
{% macro hp_public_masks(table_name) %}
    select
        c.measure,
        c.key_1,
        c.key_2,
        c.key_3,
        c.key_4,
        c.org_unit_id,
        c.period_id,
        m.is_masked
    from {{ ref('int_suppression_cells') }} as c
    join {{ ref('int_suppression_masks') }} as m on m.cell_id = c.cell_id
    where c.table_name = '{{ table_name }}'
{% endmacro %}
